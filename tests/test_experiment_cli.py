"""``retiarii run / status / top / export / plot / resume / dashboard`` on a real experiment;
bad input ends in one line and exit code 2."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from retiarii_ir.runtime.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = """
from retiarii_ir import nn
from retiarii_ir.runtime import FunctionEvaluator, SpaceSpec, report


def score(model, offset=0.0):  # defined in the config file itself: workers load it from this file
    count = sum(p.numel() for p in model.parameters())
    report(count / 2)
    return count + offset


space = SpaceSpec("tests.experiment_fixtures:TinySpace", inputs=[(2, 1, 8, 8)])
evaluator = FunctionEvaluator(score, offset=nn.ValueChoice([0.0, 0.25], label="offset"))
strategy = "{strategy}"
max_trials = 5
concurrency = 2
name = "cli"
"""


def _env():
    return {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One experiment run through the real command, in a subprocess, with its progress bar."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "search.py").write_text(CONFIG.format(strategy="tpe"))
    run = subprocess.run([sys.executable, "-m", "retiarii_ir.runtime.cli", "run", "search.py"], cwd=folder, env=_env(),
                         capture_output=True, text=True, timeout=300)
    return folder, run


def _cli(capsys, folder, *argv):
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        code = main(list(argv))
    finally:
        os.chdir(cwd)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_records_the_experiment_shows_progress_and_prints_the_leaderboard(finished):
    folder, run = finished
    assert run.returncode == 0, run.stderr[-2000:]
    assert "done 5 running 0 failed 0 best" in run.stderr  # the progress bar's last state
    assert "rank  trial" in run.stdout and "retiarii export cli --rank 1" in run.stdout
    with sqlite3.connect(folder / "retiarii.db") as db:
        states = [s for (s,) in db.execute("select state from trials")]
    assert states == ["COMPLETE"] * 5


def test_status_top_export_and_plot_read_the_store(finished, capsys):
    folder, _ = finished
    code, out, _ = _cli(capsys, folder, "status", "cli")
    assert code == 0 and "cli: 5/5 trials finished (5 complete, 0 failed)" in out and "strategy tpe" in out
    code, out, _ = _cli(capsys, folder, "top", "cli", "-k", "3")
    rows = out.strip().splitlines()[1:]
    with sqlite3.connect(folder / "retiarii.db") as db:
        best = sorted((v for (v,) in db.execute("select value from trial_values")), reverse=True)[:3]
    assert code == 0 and [float(r.split()[2]) for r in rows] == pytest.approx(best, abs=1e-4)
    code, out, _ = _cli(capsys, folder, "export", "cli", "--rank", "1", "--out", "best")
    assert code == 0
    assert {"model.py", "model.pt", "model.onnx", "model_sample.json"} <= set(os.listdir(folder / "best"))
    assert json.loads((folder / "best" / "model_sample.json").read_text())["metric"] == pytest.approx(best[0])
    code, out, _ = _cli(capsys, folder, "plot", "cli", "--out", "plot.png")
    assert code == 0 and (folder / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_draws_the_best_so_far_of_the_stored_metrics(finished):
    import optuna

    from retiarii_ir.runtime.experiments.plot import plot_experiment
    from retiarii_ir.runtime.experiments.store import Store

    folder, _ = finished
    series = plot_experiment(Store(str(folder / "retiarii.db"), create=False), "cli", str(folder / "again.png"))
    values = [t.value for t in optuna.load_study(study_name="cli", storage=f"sqlite:///{folder}/retiarii.db").trials]
    running, expected = None, []
    for v in values:
        running = v if running is None else max(running, v)
        expected.append(running)
    assert series["metrics"] == values and series["best"] == expected
    assert series["labels"] == ["width", "op", "offset"]


def test_resume_from_the_command_line_runs_nothing_twice(finished, capsys):
    folder, _ = finished
    code, out, err = _cli(capsys, folder, "resume", "search.py", "--no-progress")
    assert code == 0, err
    with sqlite3.connect(folder / "retiarii.db") as db:
        assert db.execute("select count(*) from trials").fetchone() == (5,)


@pytest.mark.parametrize("argv, message", [
    (["run", "missing.py"], "no such config file"),
    (["run", "bad_strategy.py"], "unknown strategy 'simulated-annealing'"),
    (["run", "broken.py"], "raised SyntaxError"),
    (["run", "empty.py"], "defines neither `experiment"),
    (["status", "nope"], "no experiment 'nope'"),
    (["top", "nope", "-k", "2"], "known: cli"),
    (["status", "cli", "--storage", "absent.db"], "no experiment store at"),
    (["export", "cli", "--rank", "9", "--out", "x"], "no rank 9"),
    (["dashboard", "nope"], "no experiment 'nope'"),
    (["resume", "cli"], "resume runs the experiment's config file again"),
    (["export", "../../etc", "--out", "x"], "experiment name '../../etc'"),
])
def test_bad_input_is_one_line_and_exit_code_2(finished, capsys, argv, message):
    folder, _ = finished
    (folder / "bad_strategy.py").write_text(CONFIG.format(strategy="simulated-annealing"))
    (folder / "broken.py").write_text("space = (\n")
    (folder / "empty.py").write_text("x = 1\n")
    code, out, err = _cli(capsys, folder, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (folder / "absent.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_starts_and_answers_on_localhost(finished):
    pytest.importorskip("optuna_dashboard", reason="the dashboard is the optional extra [dashboard]")
    folder, _ = finished
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "retiarii_ir.runtime.cli", "dashboard", "cli", "--port", str(port)],
                              cwd=folder, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, answer = time.monotonic() + 90, None
        while time.monotonic() < deadline and answer is None:
            assert server.poll() is None, server.stderr.read()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    answer = json.loads(response.read())
            except OSError:
                time.sleep(0.3)
        assert answer is not None, "the dashboard did not answer within 90 s"
        studies = {s["study_name"]: s for s in answer["study_summaries"]}
        assert "cli" in studies
    finally:
        server.terminate()
        server.wait(timeout=30)
