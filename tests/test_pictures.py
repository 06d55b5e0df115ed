"""Pictures of a graph, a model space and a merged plan: rendered for real (SVG through the
template, PNG through matplotlib) and read back, against expectations written by hand."""

import json
import time
import xml.etree.ElementTree as ET

import pytest
import torch

import retiarii_ir as ir
from retiarii_ir import nn
from retiarii_ir.codegen.pictures import MAX_BOXES, Picture, PictureError, Role, draw, graph_picture, layout, to_svg
from retiarii_ir.codegen.picture_model import Box
from retiarii_ir.optimizer import node_roles
from retiarii_ir.runtime.cli import main
from retiarii_ir.runtime.experiments.pictures import (BATCHED_ROLE, SHARED_ROLE, TRIAL_COLOURS, plan_of_samples,
                                                      plan_picture, show, space_picture)
from retiarii_ir.runtime.models import resnet18
from retiarii_ir.space.hub.digits import DigitsSpace, PretrainedDigitsSpace

SVG = "{http://www.w3.org/2000/svg}"


def _svg(picture_or_path) -> ET.Element:
    text = to_svg(layout(picture_or_path)) if isinstance(picture_or_path, Picture) else picture_or_path.read_text()
    return ET.fromstring(text)


def _groups(root: ET.Element, kind: str) -> dict[str, ET.Element]:
    return {g.get("data-name"): g for g in root.iter(f"{SVG}g") if kind in (g.get("class") or "").split()}


def _texts(element: ET.Element) -> list[str]:
    return [t.text for t in element.iter(f"{SVG}text")]


@pytest.fixture(scope="module")
def resnet():
    return ir.trace(resnet18(num_classes=10, width=8).eval(), torch.randn(2, 3, 32, 32))


def test_a_graph_has_a_frame_per_module_and_links_labelled_by_type(resnet, tmp_path):
    root = _svg(draw(graph_picture(resnet), tmp_path / "resnet.svg"))
    frames = _groups(root, "cluster")
    modules = {"layer1", "layer2", "layer3", "layer4"} | {f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1)} \
        | {f"layer{i}.0.downsample" for i in (2, 3, 4)}
    assert set(frames) == {f"m:{m}" for m in modules}
    assert _texts(frames["m:layer2.0"])[0] == "layer2.0 · BasicBlock"
    nodes = _groups(root, "node")
    assert _texts(nodes["layer1_0_conv1"])[:2] == ["conv1", "Conv2d"]
    links = {(g.get("data-source"), g.get("data-target")): _texts(g) for g in root.iter(f"{SVG}g")
             if g.get("class") == "link"}
    assert links[("x", "conv1")] == ["f32[B,3,32,32]"]
    assert links[("layer2_0_downsample_1", "add_2")] == ["f32[B,16,4,4]"]
    assert ("layer1_1_relu_1", "layer2_0_downsample_0") in links  # the skip branch is drawn


def test_past_a_depth_modules_fold_into_one_box_each(resnet):
    picture = graph_picture(resnet, depth=1)
    assert {c.removeprefix("m:") for c in picture.clusters} == {"layer1", "layer2", "layer3", "layer4"}
    assert picture.boxes["fold:layer2.0"].lines == ["0", "BasicBlock · 9 ops"]
    assert picture.boxes["fold:layer1.1"].cluster == "m:layer1"
    assert any("folded" in note for note in picture.notes)
    with pytest.raises(PictureError, match="depth"):
        graph_picture(resnet, depth=-1)


def test_a_graph_of_over_a_thousand_nodes_folds_to_a_readable_picture(tmp_path):
    blocks = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                                                       torch.nn.Conv2d(2, 2, 1)) for _ in range(260)])
    graph = ir.trace(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), blocks).eval(), torch.randn(1, 1, 4, 4))
    assert len(graph.nodes) > 1000
    start = time.perf_counter()
    picture = graph_picture(graph)
    draw(picture, tmp_path / "big.svg")
    assert len(picture.boxes) <= MAX_BOXES and time.perf_counter() - start < 10
    assert any(box.id.startswith("fold:") for box in picture.boxes.values())
    pytest.importorskip("matplotlib")
    from PIL import Image

    draw(picture, tmp_path / "big.png")
    width, height = Image.open(tmp_path / "big.png").size
    assert 0 < width <= 30_000 and 0 < height <= 30_000


@nn.model_wrapper
class NestedSpace(nn.Module):
    def __init__(self):
        super().__init__()
        self.op = nn.LayerChoice({"a": nn.Sequential(nn.Conv2d(3, 3, 1), nn.LayerChoice([nn.ReLU(), nn.Tanh()], label="act")),
                                  "b": nn.Identity()}, label="op")
        self.skip = nn.InputChoice(2, 1, label="skip")

    def forward(self, x):
        return self.skip([x, self.op(x)])


def test_a_space_marks_every_choice_with_its_label_and_candidates():
    space = ir.trace_space(DigitsSpace(), torch.randn(2, 1, 8, 8))
    picture = space_picture(space)
    root = _svg(picture)
    words = " ".join(_texts(root))
    for label in space.search_space.choices:
        assert f"'{label}'" in words or f"{label}:" in words
    frames = _groups(root, "cluster")
    op = frames["site:op"]
    assert _texts(op) == ["op · LayerChoice 'op'"]
    candidates = [c for c in picture.clusters.values() if c.parent == "site:op"]
    assert [c.title for c in candidates] == ["op = conv3x3", "op = conv5x5", "op = sepconv", "op = maxpool"]
    blocks = [c.title for c in picture.clusters.values() if c.parent == "site:blocks"]
    assert blocks == ["block 0: when depth in {1 | 2}", "block 1: when depth in {2}"]
    assert picture.boxes["stem_0"].lines == ["0 · Conv2d", "width: 16 | 32"]
    assert picture.boxes["site:op/0/c_0"].lines == ["0 · Conv2d", "width: 16 | 32"]  # a value choice in a candidate
    # depth 0 is a candidate: the input of the Repeat also goes straight on
    assert any(link.source == "site:op/3/c" and link.target == "adaptive_avg_pool2d" for link in picture.links)


def test_a_nested_choice_is_drawn_inside_its_parent_candidate():
    picture = space_picture(ir.trace_space(NestedSpace(), torch.randn(2, 3, 4, 4)))
    scene = layout(picture)
    rects = {cluster.id: rect for cluster, rect, _ in scene.clusters}
    inner, parent = "site:op/0/site:1", "site:op/0"
    assert picture.clusters[inner].parent == parent and picture.clusters[parent].title == "op = a"
    assert picture.clusters[inner].title == "1 · LayerChoice 'act'"
    a, b = rects[inner], rects[parent]
    assert b.x <= a.x and a.right <= b.right and b.y <= a.y and a.bottom <= b.bottom
    assert "site:op/1/site:1" not in picture.clusters  # not inside the other candidate
    assert picture.boxes["skip"].lines == ["skip", "InputChoice 'skip'", "inputs: 0 | 1", "reduce: sum"]


@pytest.fixture(scope="module")
def two_trial_plan():
    space = ir.trace_space(PretrainedDigitsSpace(), torch.randn(2, 1, 8, 8))
    return plan_of_samples(space, [{"width": 16, "op": "conv3x3", "depth": 1},
                                   {"width": 16, "op": "maxpool", "depth": 2}])


def test_a_plan_colours_shared_batched_and_each_trials_own_nodes(two_trial_plan, tmp_path):
    roles = node_roles(two_trial_plan)
    shared = {"x", *(f"t0_features_{i}" for i in range(7))}  # the input and the frozen extractor
    batched = {"t0_stem_0_x2", "t0_stem_1_x2", "t0_stem_2_x2", "t0_blocks_0_0_x2", "t0_blocks_0_1_x2",
               "t0_blocks_0_2_x2", "t0_head_x2"}
    own0 = {"t0_op_0", "t0_op_1", "t0_adaptive_avg_pool2d", "t0_flatten"}
    own1 = {"t1_op", "t1_blocks_1_0", "t1_blocks_1_1", "t1_blocks_1_2", "t1_adaptive_avg_pool2d", "t1_flatten"}
    assert {n for n, r in roles.items() if r.kind == "shared"} == shared
    assert {n for n, r in roles.items() if r.kind == "batched"} == batched
    assert {n for n, r in roles.items() if r.kind == "own" and r.trials == ("trial0",)} == own0
    assert {n for n, r in roles.items() if r.kind == "own" and r.trials == ("trial1",)} == own1
    root = _svg(draw(plan_picture(two_trial_plan), tmp_path / "plan.svg"))
    nodes = _groups(root, "node")
    fill = {name: g.find(f"{SVG}rect").get("fill") for name, g in nodes.items()}
    assert {fill[n] for n in shared} == {SHARED_ROLE.fill} and {fill[n] for n in batched} == {BATCHED_ROLE.fill}
    assert {fill[n] for n in own0} == {TRIAL_COLOURS[0][0]} and {fill[n] for n in own1} == {TRIAL_COLOURS[1][0]}
    legend = [g.get("data-role") for g in root.iter(f"{SVG}g") if g.get("class") == "legend-entry"]
    assert legend[:5] == ["trial-0", "trial-1", "shared", "batched", "glue"]
    # each trial's path: the links into and out of its own nodes take its colour
    into = {g.get("data-target"): g.find(f"{SVG}path").get("stroke") for g in root.iter(f"{SVG}g")
            if g.get("class") == "link"}
    assert {into[n] for n in own1 - {"t1_op"}} == {TRIAL_COLOURS[1][1]}
    assert {into[n] for n in own0} == {TRIAL_COLOURS[0][1]}
    out_of = {(g.get("data-source"), g.get("data-target")): g.find(f"{SVG}path").get("stroke")
              for g in root.iter(f"{SVG}g") if g.get("class") == "link"}
    assert out_of[("t1_flatten", "stacked_2")] == TRIAL_COLOURS[1][1] and out_of[("t0_flatten", "stacked_2")] == TRIAL_COLOURS[0][1]
    # shared and batched nodes stand outside every trial's frames
    frames = {name: _texts(g)[0] for name, g in _groups(root, "cluster").items()}
    assert "m:t0" not in frames and "m:t1.blocks" in frames


def test_the_png_shows_each_roles_colour(two_trial_plan, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    show(two_trial_plan, tmp_path / "plan.png")
    colours = {c for _, c in Image.open(tmp_path / "plan.png").convert("RGB").getcolors(1 << 20)}
    for hex_colour in (SHARED_ROLE.fill, BATCHED_ROLE.fill, TRIAL_COLOURS[0][0], TRIAL_COLOURS[1][0]):
        assert tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)) in colours


def test_untrusted_names_cannot_inject_markup(tmp_path):
    graph = ir.trace(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.randn(1, 2))
    graph.module_types[""] = "</text><script>alert(1)</script>"
    graph.name = '"><script>alert(2)</script>'
    picture = graph_picture(graph)
    picture.add_box(Box('a"b', ["</text><script>x</script> & $\\frac{1}{2}$", "line\nbreak\x00"], None))
    text = to_svg(layout(picture))
    root = ET.fromstring(text)  # still well-formed XML
    assert not any(e.tag.endswith("script") for e in root.iter())
    assert "<script>" not in text
    assert "</text><script>x</script> & $\\frac{1}{2}$" in _texts(root)
    assert "line?break?" in _texts(root)
    pytest.importorskip("matplotlib")
    draw(picture, tmp_path / "crafted.png")  # mathtext is off: '$' is a dollar sign, not a parse error


def test_bad_input_is_a_project_error(resnet, tmp_path):
    with pytest.raises(PictureError, match="colour"):
        Role("evil", 'red"/><script>', "#000000", "x")
    with pytest.raises(PictureError, match="role key"):
        Role("a b", "#000000", "#000000", "x")
    with pytest.raises(PictureError, match=".svg or .png"):
        draw(graph_picture(resnet), tmp_path / "x.gif")
    with pytest.raises(PictureError, match="Graph, a ModelSpace or an optimizer Plan"):
        show("resnet", tmp_path / "x.svg")
    with pytest.raises(PictureError, match="cannot write"):
        draw(graph_picture(resnet), tmp_path / "missing" / "x.svg")


def test_retiarii_show_draws_a_model_a_space_and_a_plan(tmp_path, capsys):
    factory = "retiarii_ir.space.hub.digits:DigitsSpace"
    assert main(["show", "retiarii_ir.runtime.models:resnet18", "--input-shape", "2,3,32,32",
                 "--out", str(tmp_path / "m.svg"), "--depth", "1"]) == 0
    assert "fold:layer1.0" in _groups(_svg(tmp_path / "m.svg"), "node")
    assert main(["show", factory, "--input-shape", "2,1,8,8", "--space", "--out", str(tmp_path / "s.svg")]) == 0
    assert "site:op" in _groups(_svg(tmp_path / "s.svg"), "cluster")
    assert main(["show", factory, "--input-shape", "2,1,8,8", "--plan", "2", "--out", str(tmp_path / "p.svg")]) == 0
    legend = [g.get("data-role") for g in _svg(tmp_path / "p.svg").iter(f"{SVG}g") if g.get("class") == "legend-entry"]
    assert legend[:2] == ["trial-0", "trial-1"]
    sample = json.dumps({"width": 16, "op": "maxpool", "depth": 0})
    assert main(["show", factory, "--input-shape", "2,1,8,8", "--sample", sample, "--out", str(tmp_path / "w.svg")]) == 0
    assert "op" in _groups(_svg(tmp_path / "w.svg"), "node")  # the frozen model: the chosen MaxPool2d
    capsys.readouterr()
    assert main(["show", factory, "--input-shape", "2,1,8,8", "--out", str(tmp_path / "x.jpg")]) == 2
    assert main(["show", factory, "--input-shape", "2,1,8,8", "--sample", '{"op": 1}', "--out", str(tmp_path / "y.svg")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "a picture is written as .svg or .png" in err[0] and "label 'width'" in err[1]


def test_each_trial_gets_its_picture_in_the_store_and_export_writes_it_beside_the_code(tmp_path):
    import optuna
    from optuna.artifacts import get_all_artifact_meta

    from retiarii_ir.runtime import Experiment, FunctionEvaluator, SpaceSpec
    from retiarii_ir.runtime.cli.experiment_commands import _trial_pictures

    storage = str(tmp_path / "runs.db")
    experiment = Experiment(SpaceSpec("tests.experiment_fixtures:TinySpace", inputs=[(2, 1, 8, 8)]),
                            FunctionEvaluator("tests.experiment_fixtures:parameter_count"), "random", max_trials=2,
                            concurrency=1, storage=storage, name="pics", progress=False)
    experiment.run()
    study = optuna.load_study(study_name="pics", storage=f"sqlite:///{storage}")
    folder = tmp_path / "runs-artifacts" / "pics"
    for trial in study.trials:
        (meta,) = get_all_artifact_meta(trial, storage=study._storage)
        assert meta.mimetype == "image/svg+xml" and meta.filename == "architecture.svg"
        stored = (folder / "dashboard" / meta.artifact_id).read_text()
        nodes = _groups(ET.fromstring(stored), "node")
        assert {"stem", "head", "output"} <= set(nodes)  # the trial's own architecture
        assert (folder / f"trial-{trial.number:05d}" / "architecture.svg").read_text() == stored
    from retiarii_ir.runtime.experiments.store import Store

    store = Store(storage, create=False)
    assert str(_trial_pictures(store, "pics", None)._base_path) == str(folder / "dashboard")
    paths = experiment.export(1, str(tmp_path / "out"), onnx=False)
    assert paths["picture"].endswith("model.svg") and "head" in _groups(_svg(tmp_path / "out" / "model.svg"), "node")


def test_retiarii_show_draws_a_graph_json_file_and_refuses_a_crafted_one(resnet, tmp_path, capsys):
    (tmp_path / "g.json").write_text(resnet.to_json())
    assert main(["show", str(tmp_path / "g.json"), "--out", str(tmp_path / "g.svg")]) == 0
    assert "m:layer1.0" in _groups(_svg(tmp_path / "g.svg"), "cluster")
    crafted = json.loads(resnet.to_json())
    crafted["nodes"][1]["target"] = "os.system"
    (tmp_path / "bad.json").write_text(json.dumps(crafted))
    capsys.readouterr()
    assert main(["show", str(tmp_path / "bad.json"), "--out", str(tmp_path / "bad.svg")]) == 2
    assert not (tmp_path / "bad.svg").exists() and "Traceback" not in capsys.readouterr().err


def test_retiarii_show_says_when_a_plan_has_fewer_trials_than_asked_and_refuses_a_folder_out(tmp_path, capsys):
    tiny = "tests.experiment_fixtures:TinySpace"  # 4 architectures
    assert main(["show", tiny, "--input-shape", "2,1,8,8", "--plan", "6", "--out", str(tmp_path / "p.svg")]) == 0
    legend = [g.get("data-role") for g in _svg(tmp_path / "p.svg").iter(f"{SVG}g") if g.get("class") == "legend-entry"]
    assert [r for r in legend if r.startswith("trial-")] == ["trial-0", "trial-1", "trial-2", "trial-3"]
    assert "so the plan merges 4 trials, not 6" in capsys.readouterr().err

    (tmp_path / "plain.py").write_text("import torch\n\nclass Plain(torch.nn.Module):\n"
                                       "    def forward(self, x):\n        return x.relu()\n")
    source = f"{tmp_path / 'plain.py'}:Plain"
    assert main(["show", source, "--input-shape", "2,3", "--plan", "2", "--out", str(tmp_path / "q.svg")]) == 2
    assert "has no choices" in capsys.readouterr().err and not (tmp_path / "q.svg").exists()
    for folder in ("/", "/.", "//"):
        assert main(["show", source, "--input-shape", "2,3", "--out", str(tmp_path / "pics.svg") + folder]) == 2
        assert "is a folder" in capsys.readouterr().err and not (tmp_path / "pics.svg").exists()
