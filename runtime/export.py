"""Export a finished trial as files its user owns: ``model.py`` (the generated module, which
also re-checks the stored metric when run as a script), its weights, ``model.onnx``, the
sample, and the validation split the metric came from."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil

import torch

from retiarii_ir.errors import first_line

from .evaluators import Evaluator
from .experiment_errors import ExperimentError
from .leaderboard import top
from .space_spec import SpaceSpec
from .store import Store

_CHECK = '''

if __name__ == "__main__":
    # Re-check the recorded metric: these weights on the held-out split, with nothing but torch.
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    model = Model()
    model.load_state_dict(torch.load(os.path.join(here, "{weights}"), weights_only=True), strict=True)
    model.eval()
    data = torch.load(os.path.join(here, "{validation}"), weights_only=True)
    with torch.no_grad():
        out = torch.cat([model(x) for x in data["x"].split(512)])
    if data["task"] == "classification":
        metric = (out.argmax(1) == data["y"]).float().mean().item()
    else:
        out = out.squeeze(-1) if out.dim() > data["y"].dim() else out
        metric = -torch.nn.functional.mse_loss(out, data["y"].to(out.dtype)).item()
    print(f"metric: {{metric!r}}")
'''


@contextlib.contextmanager
def _quiet_exporter():
    """torch's ONNX exporter warns about every optional library it does not find (torchvision)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export(store: Store, name: str, rank: int, out_dir: str, stem: str = "model", onnx: bool = True) -> dict[str, str]:
    """Write the ``rank``-th best trial (1 = best) into ``out_dir``; returns the paths written."""
    study_id = store.study_id(name)
    if type(rank) is not int or rank < 1:
        raise ExperimentError(f"rank must be an integer >= 1, got {rank!r}")
    ranked = top(store, study_id, rank)
    if len(ranked) < rank:
        raise ExperimentError(f"experiment {name!r} has {len(ranked)} finished trial(s); no rank {rank}")
    record = ranked[rank - 1]
    config = store.config(study_id)
    checkpoint = record.attrs.get("checkpoint")
    if not checkpoint or not os.path.isfile(checkpoint):
        raise ExperimentError(f"trial {record.number}'s checkpoint {checkpoint} is missing")
    os.makedirs(out_dir, exist_ok=True)
    evaluator = Evaluator.from_dict(config["evaluator"])
    paths = {"weights": os.path.join(out_dir, f"{stem}.pt"), "model": os.path.join(out_dir, f"{stem}.py")}
    shutil.copyfile(checkpoint, paths["weights"])
    source = record.attrs["source"]
    dataset_name = evaluator.resolve(record.sample).get("dataset")
    if dataset_name is not None:
        from .data import dataset
        from .worker import _register_loader

        _register_loader(dataset_name)
        data = dataset(dataset_name)
        paths["validation"] = os.path.join(out_dir, "validation.pt")
        torch.save({"x": data.val_x, "y": data.val_y, "task": data.task}, paths["validation"])
        source += _CHECK.format(weights=os.path.basename(paths["weights"]), validation="validation.pt")
    with open(paths["model"], "w", encoding="utf-8") as f:
        f.write(source)
    paths["sample"] = os.path.join(out_dir, f"{stem}_sample.json")
    with open(paths["sample"], "w", encoding="utf-8") as f:
        json.dump({"trial": record.number, "metric": record.metric, "sample": record.sample}, f, indent=1)
    if onnx:
        import codegen

        spec = SpaceSpec.from_dict(config["space"])
        try:
            space = spec.build()
        except Exception as e:  # noqa: BLE001 - the PyTorch files are written; say why ONNX is not
            raise ExperimentError(f"wrote {paths['model']} and {paths['weights']}, but ONNX export rebuilds the "
                                  f"space and could not: {first_line(e)} (--no-onnx skips it)") from None
        graph = space.freeze({k: v for k, v in record.sample.items() if k in space.search_space.choices})
        paths["onnx"] = os.path.join(out_dir, f"{stem}.onnx")
        state = torch.load(paths["weights"], weights_only=True)
        try:
            with _quiet_exporter():
                codegen.to_onnx(graph, paths["onnx"], spec.example_inputs(), state_dict=state, dynamic_batch=True)
        except Exception as e:  # noqa: BLE001 - the PyTorch files are written; say why ONNX is not
            raise ExperimentError(f"wrote {paths['model']} and {paths['weights']}, but ONNX export failed: "
                                  f"{type(e).__name__}: {first_line(e)}") from None
    return paths
