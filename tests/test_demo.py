"""The README's demo, end to end: space → strategy → training → standalone winner."""

import json

from runtime.cli import main


def test_demo_finds_a_model_and_writes_it_as_standalone_code(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fresh interpreter, only torch" in out and "imported: []" in out
    source = (tmp_path / "best_model.py").read_text()
    assert "import torch" in source and "retiarii" not in source.split('"""', 2)[2]
    sample = json.loads((tmp_path / "best_sample.json").read_text())
    assert set(sample) >= {"width", "op"}
