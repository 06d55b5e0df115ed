"""An experiment store is a file anyone may hand over. Crafted stores, changed with plain SQL the
way a stranger would, must not run code, import a module, or read a file outside the experiment's
artifacts folder; every malformed value ends in one line and exit code 2."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
import torch

from retiarii_ir.runtime import Classification, Experiment, FunctionEvaluator, SpaceSpec
from retiarii_ir.runtime.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANARY = "CANARY"
PLANT = f"open({CANARY!r}, 'w').write('ran')\ndef load():\n    return None\ndef make():\n    return None\n"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A real experiment of two finished trials, in ``runs.db`` with its artifacts beside it."""
    folder = tmp_path_factory.mktemp("recorded")
    Experiment(SpaceSpec("tests.experiment_fixtures:TinySpace", inputs=[(2, 1, 8, 8)]),
               FunctionEvaluator("tests.experiment_fixtures:parameter_count"), "grid", max_trials=2,
               storage=str(folder / "runs.db"), name="exp", progress=False).run()
    return folder


@pytest.fixture
def store(recorded, tmp_path):
    """A copy of the recorded experiment (store and artifacts) to craft, with a planted package
    and config file beside it that would leave a canary if anything ran them."""
    folder = tmp_path / "received"
    shutil.copytree(recorded, folder)
    (folder / "evilpkg").mkdir()
    (folder / "evilpkg" / "__init__.py").write_text(PLANT)
    (folder / "evil_config.py").write_text(PLANT)
    return folder


def _sql(folder, statement, *params):
    with sqlite3.connect(folder / "runs.db") as db:
        db.execute(statement, params)


def _config(folder) -> dict:
    with sqlite3.connect(folder / "runs.db") as db:
        (text,) = db.execute("select value_json from study_user_attributes where key='retiarii'").fetchone()
    return json.loads(text)


def _set_config(folder, config) -> None:
    _sql(folder, "update study_user_attributes set value_json=? where key='retiarii'", json.dumps(config))


def _set_attr(folder, key, value, number=0) -> None:
    _sql(folder, "update trial_user_attributes set value_json=? where key=? and trial_id="
                 "(select trial_id from trials where number=?)", json.dumps(value), key, number)


def _cli(capsys, folder, *argv):
    cwd = os.getcwd()
    os.chdir(folder)
    modules = set(sys.modules)
    try:
        given = argv[0] == "resume" or "--storage" in argv
        code = main(list(argv) if given else [*argv, "--storage", "runs.db"])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr()
    assert "evilpkg" not in set(sys.modules) - modules, "a module the store names was imported"
    assert not (folder / CANARY).exists(), "code the store names ran"
    return code, out.out, out.err


def _one_line_error(code, err, *words):
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)


def _cli_subprocess(folder, *argv):
    """As a user types it: ``python -m`` puts the current folder, and so ``evilpkg``, on sys.path."""
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "retiarii_ir.runtime.cli", *argv], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)


# ---------------------------------------------------------------------- export
def test_export_writes_code_from_the_graph_never_the_stored_text_nor_the_stored_paths(store):
    marker = "import os; os.system('touch CANARY')  # stored source"
    _set_attr(store, "source", marker)
    _set_attr(store, "checkpoint", "/etc/passwd")
    config = _config(store)
    config["space"]["factory"] = "evilpkg:make"  # export must not rebuild the space either
    config["evaluator"] = Classification("evilpkg:load").to_dict()
    _set_config(store, config)
    result = _cli_subprocess(store, "export", "exp", "--out", "best", "--storage", "runs.db")
    assert result.returncode == 0, result.stderr
    assert not (store / CANARY).exists()
    source = (store / "best" / "model.py").read_text()
    assert "os.system" not in source and "stored source" not in source
    assert "evilpkg:load" in result.stderr and "--trust evilpkg" in result.stderr  # why no validation split
    state = torch.load(store / "best" / "model.pt", weights_only=True)
    trial = store / "runs-artifacts" / "exp" / "trial-00000" / "weights.pt"
    best = json.loads((store / "best" / "model_sample.json").read_text())["trial"]
    trial = trial.parent.parent / f"trial-{best:05d}" / "weights.pt"
    assert all(torch.equal(state[k], v) for k, v in torch.load(trial, weights_only=True).items())


def test_export_trusts_a_data_package_only_when_told(store):
    config = _config(store)
    config["evaluator"] = Classification("evilpkg:load").to_dict()
    _set_config(store, config)
    result = _cli_subprocess(store, "export", "exp", "--out", "best", "--no-onnx", "--storage", "runs.db",
                             "--trust", "evilpkg")
    assert (store / CANARY).exists(), "--trust evilpkg is the user's word: then it is imported"
    assert "evilpkg:load returned NoneType; a data factory returns (train, validation)" in result.stderr


def test_a_weights_file_that_leads_outside_the_artifacts_folder_is_not_read(store, capsys, tmp_path):
    secret = tmp_path / "secret.pt"
    torch.save({"stem.weight": torch.zeros(1)}, secret)
    for number in (0, 1):
        weights = store / "runs-artifacts" / "exp" / f"trial-{number:05d}" / "weights.pt"
        weights.unlink()
        weights.symlink_to(secret)
    code, _, err = _cli(capsys, store, "export", "exp", "--out", "best")
    _one_line_error(code, err, "leads outside the experiment's artifacts folder")
    assert not (store / "best" / "model.pt").exists()


def test_a_malicious_pickle_as_weights_is_refused_in_one_line(store, capsys):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {store / CANARY}",))

    for number in (0, 1):
        torch.save({"x": Boom()}, store / "runs-artifacts" / "exp" / f"trial-{number:05d}" / "weights.pt")
    code, _, err = _cli(capsys, store, "export", "exp", "--out", "best")
    _one_line_error(code, err, "weights_only=True")


def test_a_crafted_graph_file_is_refused_by_the_graph_loader(store, capsys):
    for number in (0, 1):
        graph = store / "runs-artifacts" / "exp" / f"trial-{number:05d}" / "graph.json"
        data = json.loads(graph.read_text())
        data["modules"] = {"stem": {"$module": "os.system", "args": ["touch CANARY"]}}
        graph.write_text(json.dumps(data))
    code, _, err = _cli(capsys, store, "export", "exp", "--out", "best")
    _one_line_error(code, err, "graph.json")


# ---------------------------------------------------------------------- resume
CONFIG = """
from retiarii_ir.runtime import FunctionEvaluator, SpaceSpec

space = SpaceSpec("tests.experiment_fixtures:TinySpace", inputs=[(2, 1, 8, 8)])
evaluator = FunctionEvaluator("tests.experiment_fixtures:parameter_count")
strategy = "grid"
max_trials = 4
name = "exp"
storage = "runs.db"
"""


def test_resume_runs_the_users_config_and_names_the_field_the_store_changed(store, capsys):
    (store / "search.py").write_text(CONFIG)
    config = _config(store)
    config["config_file"] = str(store / "evil_config.py")
    config["space"]["factory"] = "evilpkg:make"
    _set_config(store, config)
    code, _, err = _cli(capsys, store, "resume", "search.py", "--no-progress")
    _one_line_error(code, err, "recorded with another space.factory", '"evilpkg:make" recorded')


def test_resume_with_a_larger_budget_runs_the_rest_of_the_space_and_records_the_budget(store, capsys):
    (store / "search.py").write_text(CONFIG.replace("max_trials = 4", "max_trials = 6"))
    code, out, err = _cli(capsys, store, "resume", "search.py", "--no-progress")
    assert code == 0, err
    assert "the space has no untried architecture left: 4 trials in all" in out  # TinySpace holds 4
    with sqlite3.connect(store / "runs.db") as db:
        assert db.execute("select count(*) from trials where state='COMPLETE'").fetchone() == (4,)
    for number in range(4):  # the new trials' files went to the experiment's folder here
        assert (store / "runs-artifacts" / "exp" / f"trial-{number:05d}" / "graph.json").is_file()
    code, out, _ = _cli(capsys, store, "status", "exp")
    assert code == 0 and "exp: 4/6 trials finished" in out


def test_links_planted_in_the_artifacts_folder_cannot_send_a_write_elsewhere(store, capsys, tmp_path):
    (store / "search.py").write_text(CONFIG)
    victim_folder, victim = tmp_path / "victim-folder", tmp_path / "victim.txt"
    victim_folder.mkdir()
    victim.write_text("precious")
    artifacts = store / "runs-artifacts" / "exp"
    (artifacts / "trial-00002").symlink_to(victim_folder)
    (artifacts / "trial-00003").mkdir()
    for name in ("graph.json", "weights.pt", "graph.json.tmp", "weights.pt.tmp"):
        (artifacts / "trial-00003" / name).symlink_to(victim)
    code, _, err = _cli(capsys, store, "resume", "search.py", "--no-progress")
    assert code == 0, err
    assert list(victim_folder.iterdir()) == [] and victim.read_text() == "precious"
    assert not (artifacts / "trial-00003" / "graph.json").is_symlink()
    with sqlite3.connect(store / "runs.db") as db:
        failure = db.execute("select value_json from trial_user_attributes a join trials t on "
                             "a.trial_id = t.trial_id where t.number = 2 and a.key = 'failure'").fetchone()
    assert "leads outside the experiment's artifacts folder" in json.loads(failure[0])


@pytest.mark.parametrize("sample", [{"width": [9], "op": "conv"}, {"width": 4, "nope": 1}])
def test_resume_refuses_a_running_trial_whose_sample_the_space_cannot_give(store, capsys, sample):
    (store / "search.py").write_text(CONFIG)
    _sql(store, "update trials set state='RUNNING' where number=1")
    _set_attr(store, "sample", sample, number=1)
    code, _, err = _cli(capsys, store, "resume", "search.py", "--no-progress")
    _one_line_error(code, err, "trial 1", "holds a sample this space cannot give")


def test_resume_with_an_evaluator_that_changed_names_it(store, capsys):
    (store / "search.py").write_text(CONFIG.replace("parameter_count\")", "parameter_count\", offset=1.0)"))
    code, _, err = _cli(capsys, store, "resume", "search.py", "--no-progress")
    _one_line_error(code, err, "recorded with another evaluator.params.offset", "(null recorded, 1.0 now)")


# ---------------------------------------------------------------------- readers
def _craft_metric_text(folder):
    _sql(folder, "update trial_values set value='abc'")


def _craft_state(folder):
    _sql(folder, "update trials set state='EXPLODED'")


@pytest.mark.parametrize("craft, command, words", [
    (lambda f: _set_attr(f, "train_seconds", "fast"), "top", ["trial 0", "train_seconds"]),
    (lambda f: _set_attr(f, "sample", [1, 2]), "plot", ["trial 0", "sample"]),
    (lambda f: _set_attr(f, "sample", {f"label{i}": 0 for i in range(5000)}), "top", ["sample"]),
    (lambda f: _set_attr(f, "attempts", {"many": True}), "status", ["attempts"]),
    (lambda f: _set_config(f, {**_config(f), "strategy": 5}), "status", ["strategy"]),
    (lambda f: _set_config(f, {k: v for k, v in _config(f).items() if k != "evaluator"}), "export", ["evaluator"]),
    (lambda f: _set_config(f, ["not", "a", "config"]), "status", ["malformed"]),
    (_craft_metric_text, "top", ["trial 0", "its metric 'abc' is not a finite number"]),
    (_craft_state, "status", ["cannot read the trials"]),
])
def test_a_value_of_the_wrong_type_is_one_line_and_exit_code_2(store, capsys, craft, command, words):
    craft(store)
    argv = [command, "exp"] + (["--out", "best"] if command == "export" else [])
    code, _, err = _cli(capsys, store, *argv)
    _one_line_error(code, err, *words)


def test_plot_draws_at_most_twelve_choices_of_a_store_with_hundreds(store, capsys):
    pytest.importorskip("matplotlib")
    from retiarii_ir.runtime.experiments.plot import plot_experiment
    from retiarii_ir.runtime.experiments.store import Store

    _set_attr(store, "sample", {f"label{i:03d}": i % 3 for i in range(500)})
    series = plot_experiment(Store(str(store / "runs.db"), create=False), "exp", str(store / "p.png"))
    assert series["choices"] == 500 + 2 and len(series["labels"]) == 12  # trial 1 keeps its width and op


def test_plot_draws_labels_as_text_and_refuses_metrics_no_axis_holds(store, capsys):
    pytest.importorskip("matplotlib")
    _set_attr(store, "sample", {"$\\frac{$": "$x", "width": 4})
    code, out, err = _cli(capsys, store, "plot", "exp", "--out", "p.png")
    assert code == 0, err
    _sql(store, "update trial_values set value = 1.7e308 where trial_id = (select min(trial_id) from trials)")
    _sql(store, "update trial_values set value = -1.7e308 where trial_id = (select max(trial_id) from trials)")
    code, _, err = _cli(capsys, store, "plot", "exp", "--out", "p.png")
    _one_line_error(code, err, "cannot plot experiment 'exp'")


def test_status_shows_no_escape_sequence_a_store_holds(store, capsys):
    _sql(store, "update studies set study_name = ?", "exp\x1b]0;PWNED\x07\x1b[2J")
    config = _config(store)
    config["space"]["factory"] = "a\x1b[31mred:b"
    _set_config(store, config)
    code, out, err = _cli(capsys, store, "status")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "exp?]0;PWNED??[2J" in out and "a?[31mred:b" in out


def test_a_file_that_is_not_a_store_is_one_line(tmp_path, capsys):
    (tmp_path / "runs.db").write_bytes(b"this is not SQLite" * 100)
    code, _, err = _cli(capsys, tmp_path, "status", "exp")
    _one_line_error(code, err, "runs.db")


@pytest.mark.parametrize("command", [["status"], ["top", "exp"]])
def test_a_store_path_under_a_file_is_one_line(tmp_path, capsys, command):
    (tmp_path / "afile").write_text("x")
    code, _, err = _cli(capsys, tmp_path, *command, "--storage", "afile/x.db")
    _one_line_error(code, err, "afile")


def test_run_with_a_store_under_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "search.py").write_text(CONFIG)
    result = _cli_subprocess(tmp_path, "run", "search.py", "--storage", "afile/x.db")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "afile is a file, not a folder" in result.stderr.strip().splitlines()[-1]
