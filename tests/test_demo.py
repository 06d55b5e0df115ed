"""The README's demo, end to end: space → strategy → training → standalone winner, run as a
user runs it: ``retiarii demo --quick`` with no other argument, from a fresh empty folder."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One quick demo in an empty working folder (relative default --out); about 10 s on one
    thread, which also keeps it steady when other processes share the cores."""
    cwd = tmp_path_factory.mktemp("fresh")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "retiarii_ir.runtime.cli", "demo", "--quick"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    return result, cwd / "retiarii-demo"


def test_demo_with_default_arguments_from_a_fresh_folder_writes_the_winner(demo_run):
    result, out = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert (out / "best_model.py").is_file() and (out / "best_model.pt").is_file()
    picture = (out / "best_model.svg").read_text()  # the winner's picture beside its code
    assert 'data-name="head"' in picture and (out / "best_model.png").stat().st_size > 0
    assert "its picture: best_model.svg, best_model.png" in result.stdout


def test_demo_finds_a_model_and_writes_it_as_standalone_code(demo_run):
    result, out = demo_run
    assert "fresh interpreter, only torch" in result.stdout and "imported: []" in result.stdout, result.stdout
    source = (out / "best_model.py").read_text()
    assert "import torch" in source and "retiarii" not in source.split('"""', 2)[2]
    sample = json.loads((out / "best_sample.json").read_text())
    assert set(sample) >= {"width", "op"}
    assert not (out / "__pycache__").exists(), "the standalone check leaves no bytecode in the output folder"


def test_demo_records_an_experiment_exports_onnx_and_plots_it(demo_run):
    import sqlite3

    result, out = demo_run
    with sqlite3.connect(out / "experiment.db") as db:
        states = [s for (s,) in db.execute("select state from trials")]
        best = db.execute("select max(value) from trial_values").fetchone()[0]
        how = [json.loads(v) for (v,) in db.execute(
            "select value_json from trial_user_attributes where key = 'trained_as'")]
    assert states == ["COMPLETE"] * 6  # --quick: 6 trials, none failed
    # 4 proposals in flight merge, without operator batching by default (so no timed choice is recorded)
    assert how == ["merged with 4"] * 4 + ["merged with 2"] * 2, how  # 6 trials: a group of 4, then the last 2
    recorded = json.loads((out / "best_model_sample.json").read_text())
    assert recorded["metric"] == best and recorded["sample"] == json.loads((out / "best_sample.json").read_text())
    assert (out / "best_model.onnx").stat().st_size > 0
    assert (out / "search.png").read_bytes()[:4] == b"\x89PNG"
    assert "rank  trial" in result.stdout  # the leaderboard


def test_the_winner_keeps_the_pretrained_extractor_it_was_searched_on(demo_run):
    """The space freezes the extractor the demo pretrained: every trial must start from it and
    never train it (a trial that re-initialised or trained it would still score, differently)."""
    import torch

    result, out = demo_run
    pretrained = torch.load(out / "features.pt", weights_only=True)
    winner = torch.load(out / "best_model.pt", weights_only=True)
    assert len(pretrained) == 6  # three convolutions' weights and biases
    for key, value in pretrained.items():
        assert torch.equal(winner[f"features.{key}"], value), key
    assert re.search(r"0\. pretrained a feature extractor .*: 0\.\d+ validation accuracy", result.stdout), result.stdout


def test_demo_without_matplotlib_still_succeeds_and_says_how_to_get_the_plot(tmp_path):
    """matplotlib is an optional extra: the demo must not fail at its last step without it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    hide_matplotlib = ("import sys; sys.modules['matplotlib'] = None; from runtime.cli import main; "
                       "sys.exit(main(['demo', '--quick']))")
    result = subprocess.run([sys.executable, "-c", hide_matplotlib], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "5. no plot of the search (plot needs matplotlib: pip install -e '.[plot]')" in result.stdout
    assert (tmp_path / "retiarii-demo" / "best_model.py").is_file()
    assert not (tmp_path / "retiarii-demo" / "search.png").exists()


def test_on_a_busy_machine_the_demo_trains_with_the_free_cores_unless_the_user_chose(monkeypatch):
    import subprocess
    import sys

    import torch

    from retiarii_ir.runtime.cli.demo import fit_demo_threads
    from retiarii_ir.runtime.lifetime import owned_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    default = torch.get_num_threads()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(owned_cores())]
    try:
        import time

        time.sleep(0.5)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user chose: left alone
        assert fit_demo_threads() is None and torch.get_num_threads() == default
        monkeypatch.delenv("OMP_NUM_THREADS")
        note = fit_demo_threads()
        assert (note is None) == (default == 1)
        assert torch.get_num_threads() == 1
        if note:
            assert "busy" in note and "training with 1 torch thread" in note
    finally:
        for hog in hogs:
            hog.kill()
        torch.set_num_threads(default)
