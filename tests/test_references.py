"""A ``module:name`` reference is checked before anything it names is imported or called: the
spelling, then (for names read from data) whether the user trusts that package or file, then the
object itself. Crafted specs, job lines and checkpoints end in one project error, never in code
that runs (a canary file that must not appear)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from retiarii_ir import IRError, limits
from retiarii_ir.runtime import Classification, ConfigError, FunctionEvaluator, SpaceSpec
from retiarii_ir.runtime.references import Trust, resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "tests.experiment_fixtures:TinySpace"


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A package and a script on sys.path that leave a canary when imported, and one that
    re-exports os.system under an innocent name."""
    canary = tmp_path / "CANARY"
    (tmp_path / "plantpkg").mkdir()
    (tmp_path / "plantpkg" / "__init__.py").write_text(f"open({str(canary)!r}, 'w')\ndef make():\n    return 1\n")
    (tmp_path / "reexport.py").write_text("from subprocess import run\nfrom builtins import eval as evaluate\n")
    (tmp_path / "script.py").write_text(f"open({str(canary)!r}, 'w')\ndef make():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path, canary
    for name in ("plantpkg", "reexport"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("factory, words", [
    ("os:system", "standard library"),
    ("builtins:__import__", "dunder"),
    ("subprocess:run", "standard library"),
    ("tests.experiment_fixtures:__class__", "dunder"),
    ("tests.experiment_fixtures:TinySpace.__init__.__globals__", "dunder"),
    ("tests.__builtins__:eval", "not a module name"),
    ("not a reference", "must look like"),
    ("x" * 2000 + ":make", "reference is text"),
])
def test_a_space_spec_refuses_names_of_the_standard_library_and_dunders_before_importing(factory, words):
    modules = set(sys.modules)
    with pytest.raises(ConfigError, match=words):
        SpaceSpec(factory, inputs=[(2, 1, 8, 8)])
    assert set(sys.modules) == modules


def test_a_name_that_re_exports_a_standard_library_function_is_refused_by_what_it_is(planted):
    spec = SpaceSpec("reexport:run", inputs=[(2, 1, 8, 8)])  # spelled as the user's own module
    with pytest.raises(ConfigError, match=r"is subprocess.run, from the standard library"):
        spec.build()
    with pytest.raises(ConfigError, match="holds a builtin_function_or_method value"):
        resolve("reexport:evaluate")


def test_a_file_reference_is_not_run_when_the_spec_is_made(planted):
    folder, canary = planted
    spec = SpaceSpec(f"{folder / 'script.py'}:make", inputs=[(2, 1, 8, 8)])
    assert not canary.exists()
    with pytest.raises(ConfigError, match="no such file"):
        SpaceSpec(f"{folder / 'missing.py'}:make")
    with pytest.raises(ConfigError, match="returned int, not an nn.Module"):  # the result's type is checked
        spec.build()
    assert canary.exists()  # build() is where the user's own code runs


def test_names_read_from_data_import_only_trusted_packages_and_files(planted):
    folder, canary = planted
    with pytest.raises(ConfigError, match="not trusted .trusted: package tests.; nothing was imported.*--trust plantpkg"):
        resolve("plantpkg:make", Trust.of(packages=["tests"]))
    with pytest.raises(ConfigError, match="not a reference of this experiment"):
        resolve(f"{folder / 'script.py'}:make", Trust.of(packages=["plantpkg"]))
    assert not canary.exists()
    assert resolve("plantpkg:make", Trust.of(packages=["plantpkg"]))() == 1
    assert canary.exists()
    assert resolve(f"{folder / 'script.py'}:make", Trust.of([f"{folder / 'script.py'}:make"]))() == 1


def test_an_experiments_own_references_trust_nothing_else_of_their_package():
    """Workers trust the space factory ``retiarii_ir.space.hub.digits:DigitsSpace``, not the rest of ``runtime``."""
    trust = Trust.of(["retiarii_ir.space.hub.digits:DigitsSpace", "tests.experiment_fixtures:parameter_count"])
    assert resolve("retiarii_ir.space.hub.digits:DigitsSpace", trust).__name__ == "DigitsSpace"
    for other in ("retiarii_ir.runtime.cli.demo:run_demo", "retiarii_ir.runtime.references:load_file_module",
                  "retiarii_ir.runtime.cli:main"):
        with pytest.raises(ConfigError, match="is not trusted"):
            resolve(other, trust)


def test_example_inputs_over_the_build_limit_are_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(limits, "MAX_BUILD_BYTES", 2**20)
    with pytest.raises(ConfigError, match=r"example inputs would allocate 4.0 MiB, over the limit of 1.0 MiB"):
        SpaceSpec(TINY, inputs=[(1024, 1024)])
    with pytest.raises(ConfigError, match="at most 16 positive integers"):
        SpaceSpec(TINY, inputs=[tuple([1] * 17)])
    with pytest.raises(ConfigError, match="at most 64 example inputs"):
        SpaceSpec(TINY, inputs=[(1, 1)] * 65)


@pytest.mark.parametrize("raw, words", [
    ("not a dict", "malformed space spec"),
    ({"factory": TINY, "inputs": "2,1,8,8"}, "inputs must be"),
    ({"factory": TINY, "inputs": [[[2, 1], "complex128"]]}, "unknown dtype"),
    ({"factory": TINY, "inputs": [[[2, 1], "float32"]], "trust": 5}, "space trust"),
    ({"factory": TINY, "inputs": [], "kwargs": {"a": float("nan")}}, "plain JSON"),
    ({"factory": TINY, "inputs": [], "extra": 1}, "malformed space spec"),
])
def test_a_crafted_space_spec_is_one_config_error(raw, words):
    with pytest.raises(ConfigError, match=words):
        SpaceSpec.from_dict(raw)


# ---------------------------------------------------------------------- job lines
def _job(space=None, evaluator=None, **extra) -> str:
    spec = SpaceSpec(TINY, inputs=[(2, 1, 8, 8)])
    job = {"space": space or spec.to_dict(),
           "evaluator": evaluator or FunctionEvaluator("tests.experiment_fixtures:parameter_count").to_dict(),
           "model_space": spec.build().search_space.to_json(),
           "trials": [{"number": 0, "trial_id": 1, "sample": {"width": 4, "op": "conv"}}], **extra}
    return json.dumps(job)


def test_a_pool_worker_takes_what_it_may_import_from_its_start_not_from_job_lines(tmp_path, planted):
    """Crafted job lines into a real pool worker: none runs code or writes outside its folder;
    each gets an answer, and the worker goes on to the honest job."""
    folder, canary = planted
    artifacts = tmp_path / "artifacts"
    context = {"store": f"sqlite:///{tmp_path / 'jobs.db'}", "artifacts": str(artifacts),
               "trust": Trust.of([TINY, "tests.experiment_fixtures:parameter_count"]).to_json()}
    system = {"factory": "os:system", "inputs": [], "kwargs": {"command": f"touch {canary}"}}
    lines = [
        _job(space=system),
        _job(space={"factory": "plantpkg:make", "inputs": []}),
        _job(space={"factory": f"{folder / 'script.py'}:make", "inputs": []}),
        _job(evaluator={"kind": "function", "params": {}, "fn": "plantpkg:make"}),
        _job(evaluator=Classification("plantpkg:make").to_dict()),
        _job(space={"factory": "retiarii_ir.runtime.references:load_file_module", "inputs": [],
                    "kwargs": {"path": str(folder / "script.py")}}),
        _job(artifacts="/etc", store="sqlite:////tmp/elsewhere.db"),
        '{"trials": "all"}',
        "[" * 100_000,
        _job(),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, str(folder)]), "OMP_NUM_THREADS": "1"}
    worker = subprocess.run([sys.executable, "-m", "retiarii_ir.runtime.experiments.pool_worker", "1", json.dumps(context)],
                            input="\n".join(lines) + "\n", env=env, capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr[-2000:]
    results = [json.loads(line) for line in worker.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(lines)
    reasons = [r.get("error") or r["trials"][0].get("error", "") for r in results]
    assert "standard library" in reasons[0]
    assert "not trusted" in reasons[1] and "not trusted" in reasons[3] and "not trusted" in reasons[4]
    assert "not a reference of this experiment" in reasons[2]
    assert "not trusted" in reasons[5]
    assert "malformed job" in reasons[6] and "malformed job" in reasons[7] and "JSON" in reasons[8]
    assert results[-1]["trials"][0]["status"] == "succeeded", results[-1]
    assert results[-1]["trials"][0]["checkpoint"].startswith(str(artifacts))
    assert not canary.exists()
    assert not os.path.exists("/tmp/elsewhere.db")


# ---------------------------------------------------------------------- checkpoints and timing
class _Boom:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_one_shot_checkpoint_that_carries_a_pickle_is_refused(tmp_path):
    from retiarii_ir import nn
    from retiarii_ir.strategies.oneshot import DARTS
    from retiarii_ir.strategies.oneshot.mixed import OneShotError

    class Space(nn.Module):
        def __init__(self):
            super().__init__()
            self.op = nn.LayerChoice([torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)], label="op")

        def forward(self, x):
            return self.op(x)

    import retiarii_ir as ir

    model = Space()
    search = DARTS(ir.trace_space(model, torch.randn(2, 4)), model, epochs=1)
    path = tmp_path / "ckpt.pt"
    torch.save({"method": "DARTS", "supernet": _Boom(tmp_path / "CANARY")}, path)
    with pytest.raises(OneShotError, match="weights_only=True"):
        search.load(str(path))
    torch.save({"method": "DARTS", "supernet": {}, "arch": "garbage"}, path)
    with pytest.raises(OneShotError, match="does not fit this DARTS search"):
        search.load(str(path))
    with pytest.raises(OneShotError, match="no such checkpoint"):
        search.load(str(tmp_path / "missing.pt"))
    assert not (tmp_path / "CANARY").exists()
    search.save(str(path))
    assert search.load(str(path)) is search


def test_timing_a_convolution_over_the_build_limit_is_refused_before_allocating(monkeypatch):
    from retiarii_ir.runtime.training.autotune import grouped_conv_wins

    monkeypatch.setattr(limits, "MAX_BUILD_BYTES", 2**24)
    with pytest.raises(IRError, match=r"would allocate 4,\d{3}\.\d MiB, over the limit of 16.0 MiB"):
        grouped_conv_wins(4, 4096, 16, 16, (32, 32), (3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert grouped_conv_wins(2, 2, 4, 4, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1), 1) in (True, False)
