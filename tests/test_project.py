"""The project's own promises: CI runs exactly the README's test command."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def test_ci_runs_the_readme_test_command_verbatim():
    blocks = re.findall(r"```bash\n(.*?)\n```", _read("README.md"), re.S)
    test_commands = [b for b in blocks if "pytest" in b]
    assert len(test_commands) == 1, "the README shows one test command"
    assert test_commands[0].strip() in _read(".ci", "run").splitlines()


def test_setup_commands_pin_the_cpu_torch_first():
    blocks = re.findall(r"```bash\n(.*?)\n```", _read("README.md"), re.S)
    setup = [b for b in blocks if "pip install" in b]
    assert len(setup) == 2 and all(b.startswith("pip install torch==2.13.0 && ") for b in setup)


def test_hypothesis_writes_nothing_into_the_working_tree():
    """No example database, and its other files (failure patches) go under the temp dir."""
    from hypothesis import settings
    from hypothesis.configuration import storage_directory

    assert settings.default.database is None
    assert not os.path.abspath(str(storage_directory("patches").path)).startswith(ROOT + os.sep)
