"""The library runs from a folder holding the user's own optimizer.py, runtime.py, codegen.py and
strategies.py: a script that traces, trains two trials merged and exports the winner, and
``retiarii demo --quick`` (see ``user_files_check.py``)."""

from tests.user_files_check import check


def test_the_users_own_optimizer_runtime_codegen_and_strategies_files_shadow_nothing(tmp_path):
    trained, demo = check(str(tmp_path))
    assert trained.startswith("winner {") and " accuracy " in trained
    assert demo.startswith("next: retiarii top demo")
    assert (tmp_path / "best_model.py").is_file() and (tmp_path / "demo" / "best_model.onnx").is_file()
