"""Export a finished trial as files its user owns: ``model.py`` (the generated module, which
also re-checks the stored metric when run as a script), its picture (``model.svg``, and
``model.png`` where matplotlib is installed), its weights, ``model.onnx``, the sample, and the validation split the metric came from. A store may come from anyone: nothing
it names is run, and no file outside the experiment's artifacts folder is read."""

from __future__ import annotations

import json
import os
import sys
import warnings

import torch

from retiarii_ir.errors import IRError, first_line

from retiarii_ir.runtime.experiments.evaluators import Evaluator
from retiarii_ir.runtime.errors import ExperimentError
from retiarii_ir.runtime.experiments.leaderboard import top
from retiarii_ir.runtime.references import Trust
from retiarii_ir.runtime.experiments.store import Store

MAX_GRAPH_BYTES = 512 * 2**20

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


_NO_CHECK = '''

if __name__ == "__main__":
    print("no validation split was exported with this model, so there is nothing to re-check here "
          "(the export said why; `retiarii export ... --trust PACKAGE` exports it for a data set of your package)")
'''


def default_artifacts(store_url: str, name: str) -> str:
    """The artifacts folder an experiment uses unless its definition names one: beside its store
    file (``runs.db`` -> ``runs-artifacts/NAME``), or under the current folder for a server URL."""
    if store_url.startswith("sqlite:///"):
        base = os.path.splitext(store_url[len("sqlite:///"):])[0]
    elif store_url.startswith("journal://"):
        base = os.path.splitext(store_url[len("journal://"):])[0]
    else:
        base = os.path.abspath("retiarii")
    return f"{base}-artifacts{os.sep}{name}"


def _inside(path: str, folder: str) -> str:
    """``path`` with its links resolved, refused unless it lies inside ``folder``."""
    real, root = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([real, root]) != root:
        raise ExperimentError(f"{path} leads outside the experiment's artifacts folder {folder}; not read")
    return real


def _read_graph(path: str, trust: Trust):
    import retiarii_ir as ir

    if not os.path.isfile(path):
        raise ExperimentError(f"{path} is missing: the trial's graph is needed to generate its code "
                              f"(a trial recorded before graphs were kept cannot be exported)")
    if os.path.getsize(path) > MAX_GRAPH_BYTES:
        raise ExperimentError(f"{path} is over {MAX_GRAPH_BYTES // 2**20} MiB; not read")
    with open(path, "rb") as f:
        text = f.read()
    try:
        return ir.Graph.from_json(text, trust=sorted(trust.packages))
    except ir.IRError as e:
        raise ExperimentError(f"{path}: {first_line(e)}") from None


def _read_weights(path: str, graph) -> dict[str, torch.Tensor]:
    """The trial's state_dict, read without unpickling code and loaded strictly into its model."""
    from retiarii_ir import codegen

    if not os.path.isfile(path):
        raise ExperimentError(f"the trial's weights {path} are missing")
    try:
        with warnings.catch_warnings():  # torch warns about files it then reads or refuses: the error says all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a crafted or damaged file: weights_only refuses it
        raise ExperimentError(f"{path} is not a weights file torch.load(weights_only=True) reads: "
                              f"{type(e).__name__}: {first_line(e)}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ExperimentError(f"{path} is not a state_dict (a dict of names to tensors)")
    try:
        codegen.load(graph, class_name="Model", formatted=False)().load_state_dict(state, strict=True)
    except (RuntimeError, IRError) as e:
        raise ExperimentError(f"{path} does not fit the trial's model: {first_line(e)}") from None
    return state


MAX_EXPORTED_VALIDATION = 50_000  # items of a pipeline's validation split written beside the model


def _validation_split(evaluator: Evaluator, sample: dict, trust: Trust) -> dict | None:
    """The validation split the metric came from, as tensors (``x``, ``y``, ``task``), when it can
    be had without running untrusted code; None, with a note saying why, otherwise."""
    from retiarii_ir.runtime.training.data import is_registered, open_source

    def skipped(reason: str) -> None:
        print(f"note: no validation split written: {reason}", file=sys.stderr)

    if not hasattr(evaluator, "train_spec"):
        return None
    try:
        spec, config = evaluator.train_spec(sample)
    except IRError as e:
        return skipped(first_line(e))
    if not spec.is_reference and not is_registered(spec.dataset):
        return skipped(f"the data set {spec.dataset!r} is registered by your own code")
    if config.metric is not None:
        return skipped(f"the metric is your own function ({config.metric}); model.py re-checks only accuracy "
                       f"and negative MSE")
    source = None
    try:
        source = open_source(spec, trust)
        xs, ys, count = [], [], 0
        for x, y in source.validation():
            xs.append(x), ys.append(y)
            count += len(x)
            if count > MAX_EXPORTED_VALIDATION:
                return skipped(f"the validation split holds more than {MAX_EXPORTED_VALIDATION} items")
    except IRError as e:
        return skipped(first_line(e))
    finally:
        if source is not None:
            source.close()
    x, y = torch.cat(xs), torch.cat(ys)
    regression = config.loss == "mse" or (config.loss != "cross_entropy" and y.is_floating_point())
    task = source.task or ("regression" if regression else "classification")
    return {"x": x, "y": y, "task": task}


def export(store: Store, name: str, rank: int, out_dir: str, stem: str = "model", onnx: bool = True,
           artifacts: str | None = None, trust: Trust = Trust()) -> dict[str, str]:
    """Write the ``rank``-th best trial (1 = best) into ``out_dir``; returns the paths written.

    The store is data: the code comes from the trial's graph through codegen, its files are
    read only from the experiment's artifacts folder (default: beside the store), and a data
    set is loaded only from a trusted package (``trust``)."""
    from retiarii_ir import codegen
    from retiarii_ir.shape_inference import example_inputs

    from retiarii_ir.runtime.experiments.experiment import check_name
    from retiarii_ir.runtime.experiments.worker import trial_folder

    check_name(name)
    study_id = store.study_id(name)
    if type(rank) is not int or rank < 1:
        raise ExperimentError(f"rank must be an integer >= 1, got {rank!r}")
    ranked = top(store, study_id, rank)
    if len(ranked) < rank:
        raise ExperimentError(f"experiment {name!r} has {len(ranked)} finished trial(s); no rank {rank}")
    record = ranked[rank - 1]
    evaluator = Evaluator.from_dict(store.config(study_id)["evaluator"])
    if artifacts is None:
        artifacts = default_artifacts(store.url, name)
        for part in (artifacts, os.path.dirname(artifacts)):  # the two folders named after the store
            if os.path.islink(part):
                raise ExperimentError(f"{part} is a link; an experiment's artifacts folder is a folder beside "
                                      f"its store (name another with --artifacts)")
    folder = trial_folder(artifacts, record.number)
    graph = _read_graph(_inside(os.path.join(folder, "graph.json"), artifacts), trust)
    state = _read_weights(_inside(os.path.join(folder, "weights.pt"), artifacts), graph)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ExperimentError(f"cannot write {out_dir}: {e.strerror}") from None
    paths = {"weights": os.path.join(out_dir, f"{stem}.pt"), "model": os.path.join(out_dir, f"{stem}.py")}
    torch.save(state, paths["weights"])
    source = codegen.to_source(graph, class_name="Model")
    data = _validation_split(evaluator, record.sample, trust)
    if data is not None:
        paths["validation"] = os.path.join(out_dir, "validation.pt")
        torch.save(data, paths["validation"])
        source += _CHECK.format(weights=os.path.basename(paths["weights"]), validation="validation.pt")
    else:
        source += _NO_CHECK
    with open(paths["model"], "w", encoding="utf-8") as f:
        f.write(source)
    from retiarii_ir.runtime.experiments.pictures import write_beside

    paths.update(write_beside(graph, paths["model"]))
    paths["sample"] = os.path.join(out_dir, f"{stem}_sample.json")
    with open(paths["sample"], "w", encoding="utf-8") as f:
        json.dump({"trial": record.number, "metric": record.metric, "sample": record.sample}, f, indent=1)
    if onnx:
        paths["onnx"] = os.path.join(out_dir, f"{stem}.onnx")
        try:
            codegen.to_onnx(graph, paths["onnx"], example_inputs(graph, 2), state_dict=state, dynamic_batch=True)
        except Exception as e:  # noqa: BLE001 - the PyTorch files are written; say why ONNX is not
            raise ExperimentError(f"wrote {paths['model']} and {paths['weights']}, but ONNX export failed: "
                                  f"{type(e).__name__}: {first_line(e)} (--no-onnx skips it)") from None
    return paths
