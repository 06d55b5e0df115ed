"""Bad input to the ``retiarii`` command line: exit code 2, one line on stderr naming the
argument, and no traceback, for every argument the commands take."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

from retiarii_ir.runtime.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACTORY = "tests.test_cli:tiny_model"


def tiny_model() -> torch.nn.Module:
    """The model factory the commands below load: traces in milliseconds."""
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())


NOT_CALLABLE = 3


def returns_int():
    return 5


def run_cli(capsys, *argv) -> tuple:
    """(exit code, stdout, stderr) of ``retiarii ARGV`` run in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(result, argument: str, *words: str) -> str:
    """Exit code 2 and one error line (after argparse's usage, if any) naming ``argument``."""
    code, _, err = result
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    if len(lines) > 1:
        assert lines[0].startswith("usage:"), err
        assert not any("error" in line for line in lines[:-1]), err
    message = lines[-1]
    assert message.startswith("retiarii ") and f": error: argument {argument}: " in message, message
    for word in words:
        assert word in message, (word, message)
    return message


def run_subprocess(cwd, *argv) -> subprocess.CompletedProcess:
    """``python -m retiarii_ir.runtime.cli ARGV`` in ``cwd``: what a user sees, logging and warnings included."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "retiarii_ir.runtime.cli", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def graph_json(tmp_path, capsys):
    """A valid graph file, made with ``retiarii trace --out``."""
    path = tmp_path / "graph.json"
    assert run_cli(capsys, "trace", FACTORY, "--input-shape", "2,4", "--out", path)[0] == 0
    return path


# --input-shape

@pytest.mark.parametrize("shape, words", [
    ("0,4", ["'0,4'", "positive"]),
    ("-2,4", ["'-2,4'", "positive"]),
    ("2,x", ["'2,x'", "integers"]),
    ("", ["''", "integers"]),
    ("2,,4", ["integers"]),
])
@pytest.mark.parametrize("command", ["trace", "codegen"])
def test_bad_input_shape(command, shape, words, tmp_path, capsys):
    argv = [command, FACTORY, f"--input-shape={shape}"] + (["--out", tmp_path / "m.py"] if command == "codegen" else [])
    assert_usage_error(run_cli(capsys, *argv), "--input-shape", *words)


def test_input_shape_too_large_to_allocate(capsys):
    assert_usage_error(run_cli(capsys, "trace", FACTORY, "--input-shape", "100000,100000,100000"),
                       "--input-shape", "over the limit of 8,192 MiB")


def test_input_shape_that_does_not_fit_the_model_prints_no_traceback(tmp_path):
    """Torch's fake-tensor probe logs a traceback of its own when the shapes do not fit."""
    result = run_subprocess(tmp_path, "trace", FACTORY, "--input-shape", "2,5")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("retiarii trace: error: ") and "2x5 and 4x3" in result.stderr


# model specs (trace's model, codegen's source)

@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """A folder on sys.path holding a module that fails when imported."""
    (tmp_path / "fails_on_import.py").write_text("raise ValueError('broken module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("fails_on_import", None)


@pytest.mark.parametrize("spec, words", [
    ("tests.test_cli", ["must look like 'package.module:ClassOrFactory'"]),
    (":tiny_model", ["must look like"]),
    ("no_such_module_xyz:make", ["cannot import factory", "No module named 'no_such_module_xyz'"]),
    ("tests.test_cli:no_such_factory", ["cannot import factory", "no_such_factory"]),
    (".relative:make", ["is not a module name"]),
    ("fails_on_import:make", ["cannot import factory", "ValueError: broken module"]),
    ("tests.test_cli:NOT_CALLABLE", ["holds a int value, not a function or class"]),
    ("tests.test_cli:returns_int", ["returned int, not an nn.Module"]),
])
def test_bad_model_spec(spec, words, user_modules, capsys):
    assert_usage_error(run_cli(capsys, "trace", spec, "--input-shape", "2,4"), "model", *words)


@pytest.mark.parametrize("source", ["missing_model", "missing.pt", "missing.json", "folder/missing"])
def test_missing_source_file_is_not_mistaken_for_a_factory(source, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = assert_usage_error(run_cli(capsys, "codegen", source, "--out", "m.py", "--input-shape", "2,4"),
                                 "source", f"no such file: {source}")
    assert "import" not in message


def test_source_factory_that_cannot_be_imported(tmp_path, capsys):
    message = assert_usage_error(run_cli(capsys, "codegen", "no_such_module_xyz:make", "--out", tmp_path / "m.py",
                                         "--input-shape", "2,4"), "source", "cannot import factory")
    assert "no such file" not in message


def test_source_that_is_a_folder_or_binary(tmp_path, capsys):
    assert_usage_error(run_cli(capsys, "codegen", tmp_path, "--out", tmp_path / "m.py"), "source", "is a folder")
    binary = tmp_path / "graph.json"
    binary.write_bytes(bytes(range(128, 256)))
    assert_usage_error(run_cli(capsys, "codegen", binary, "--out", tmp_path / "m.py"), "source", "not UTF-8")


# --out and --onnx

def test_trace_out_that_is_a_folder_or_under_a_file(tmp_path, capsys):
    assert_usage_error(run_cli(capsys, "trace", FACTORY, "--input-shape", "2,4", "--out", tmp_path),
                       "--out", "is a folder")
    (tmp_path / "a_file").write_text("x")
    under_a_file = tmp_path / "a_file" / "g.json"
    assert_usage_error(run_cli(capsys, "trace", FACTORY, "--input-shape", "2,4", "--out", under_a_file),
                       "--out", "a_file is a file, not a folder")


def test_trace_out_in_a_new_folder_is_created(tmp_path, capsys):
    target = tmp_path / "new" / "graph.json"
    assert run_cli(capsys, "trace", FACTORY, "--input-shape", "2,4", "--out", target)[0] == 0
    assert target.read_text().startswith("{")


@pytest.mark.parametrize("flag", ["--out", "--onnx"])
def test_codegen_outputs_that_are_folders_or_under_a_file(flag, graph_json, tmp_path, capsys):
    other = {"--out": [], "--onnx": ["--out", tmp_path / "m.py"]}[flag]
    assert_usage_error(run_cli(capsys, "codegen", graph_json, *other, flag, tmp_path), flag, "is a folder")
    assert_usage_error(run_cli(capsys, "codegen", graph_json, *other, flag, graph_json / "x"),
                       flag, "is a file, not a folder")


def test_codegen_refuses_to_overwrite_its_source(graph_json, capsys):
    before = graph_json.read_text()
    assert_usage_error(run_cli(capsys, "codegen", graph_json, "--out", graph_json), "--out", "source graph")
    assert graph_json.read_text() == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_unwritable_out_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_usage_error(run_cli(capsys, "trace", FACTORY, "--input-shape", "2,4", "--out", locked / "g.json"),
                           "--out", "permission denied")
        assert_usage_error(run_cli(capsys, "demo", "--out", locked / "demo"), "--out", "permission denied")
    finally:
        locked.chmod(0o700)


def test_demo_out_that_is_a_file_fails_before_any_training(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out in (a_file, a_file / "sub"):
        code, stdout, _ = result = run_cli(capsys, "demo", "--quick", "--out", out)
        assert_usage_error(result, "--out", "is a file")
        assert "digits" not in stdout


def test_demo_batch_and_exact_together_are_refused_before_any_work(tmp_path, capsys):
    code, stdout, _ = result = run_cli(capsys, "demo", "--batch", "--exact", "--out", tmp_path / "d")
    assert_usage_error(result, "--batch", "contradict")
    assert "digits" not in stdout and not (tmp_path / "d").exists()


# --weights

@pytest.fixture
def bad_weights(tmp_path):
    """Files that are not a state_dict, by name."""
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "pickled_object.pt").write_bytes(pickle.dumps(ValueError("not weights")))
    (tmp_path / "empty.pt").write_bytes(b"")
    for name, value in {"list.pt": [1, 2], "tensor.pt": torch.ones(3), "dict_of_ints.pt": {"0.weight": 1}}.items():
        torch.save(value, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("name, words", [
    ("random.pt", ["not a state_dict", "weights_only=True"]),
    ("pickled_object.pt", ["not a state_dict", "weights_only=True"]),
    ("empty.pt", ["not a state_dict"]),
    ("list.pt", ["holds a list, not a state_dict"]),
    ("tensor.pt", ["holds a Tensor, not a state_dict"]),
    ("dict_of_ints.pt", ["'0.weight' holds int, not a tensor"]),
    ("missing.pt", ["no such file"]),
])
def test_weights_that_are_not_a_state_dict(name, words, bad_weights, capsys):
    out = bad_weights / "out"
    result = run_cli(capsys, "codegen", FACTORY, "--input-shape", "2,4", "--out", out / "m.py",
                     "--onnx", out / "m.onnx", "--weights", bad_weights / name)
    assert_usage_error(result, "--weights", *words)
    assert not out.exists(), "bad weights must stop the command before it writes anything"


def test_weights_load_without_running_pickled_code(tmp_path, capsys):
    """weights_only=True: a pickle that would call a function when unpickled is refused unrun."""
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "exploit.pt").write_bytes(pickle.dumps(Exploit()))
    result = run_cli(capsys, "codegen", FACTORY, "--input-shape", "2,4", "--out", tmp_path / "m.py",
                     "--onnx", tmp_path / "m.onnx", "--weights", tmp_path / "exploit.pt")
    assert_usage_error(result, "--weights", "not a state_dict")
    assert not marker.exists()


@pytest.mark.parametrize("flag", [["--weights", "w.pt"], ["--check-onnx"], ["--dynamic-batch"]])
def test_onnx_options_without_onnx(flag, graph_json, tmp_path, capsys):
    assert_usage_error(run_cli(capsys, "codegen", graph_json, "--out", tmp_path / "m.py", *flag),
                       flag[0], "only applies with --onnx")


# one convention, seen from outside

def test_errors_from_a_fresh_process_are_one_line_with_exit_code_2(tmp_path):
    """The installed entry point, run as a user would: bad weights, then a mistyped path."""
    (tmp_path / "weights.pt").write_bytes(b"\x80not a pickle")
    weights = run_subprocess(tmp_path, "codegen", FACTORY, "--input-shape", "2,4", "--out", "m.py",
                             "--onnx", "m.onnx", "--weights", "weights.pt")
    missing = run_subprocess(tmp_path, "codegen", "graph.jsn", "--out", "m.py")
    for result, argument in ((weights, "--weights"), (missing, "source")):
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and f"error: argument {argument}: " in result.stderr, result.stderr


def test_help_documents_the_exit_codes(capsys):
    code, out, _ = run_cli(capsys, "codegen", "--help")
    assert code == 0 and "2 usage or input error" in " ".join(out.split())
