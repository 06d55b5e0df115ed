"""Pictures of the three things a user looks at: a model (its graph), a model space (its choice
sites and candidates) and a merged plan (what the trials share, batch and keep their own).

    show(graph, "model.svg")          # or .png; a ModelSpace or an optimizer Plan the same way
    show(space, "space.png")
    show(plan, "plan.svg")

Codegen draws; this module says what to draw: the space's sites (read from its mutators) and
the plan's roles (``optimizer.roles``), each turned into drawing terms."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from retiarii_ir.codegen import Option, Picture, PictureError, Role, Site, draw, graph_picture
from retiarii_ir.graph import Graph
from retiarii_ir.optimizer import BATCHED, GLUE, SHARED, Plan, merged_nodes, node_roles
from retiarii_ir.space import ChoiceSite, ModelSpace, SiteMutator, choice_sites

SHARED_ROLE = Role("shared", "#c6f0d2", "#2f855a", "shared (CSE): computed once for several trials", apart=True)
BATCHED_ROLE = Role("batched", "#e4d7fb", "#6b46c1", "batched: one fused kernel for several trials", apart=True)
GLUE_ROLE = Role("glue", "#ffffff", "#999999", "the plan's own (a trial's slice of a batched value, the joint output)")
TRIAL_COLOURS = (("#fde2c4", "#c05621"), ("#c9f0ec", "#2c7a7b"), ("#fbd5d5", "#c53030"), ("#f6d5ee", "#97266d"),
                 ("#e2ecc4", "#5f7a1a"), ("#e6dccf", "#7b5a36"), ("#d6e4ff", "#3451b2"), ("#eeeeaa", "#8a7a00"))


# ---------------------------------------------------------------------- merged plans
def trial_roles(plan: Plan) -> dict[str, Role]:
    """One Role per trial (its own colour, its links too), plus shared, batched and glue."""
    roles = {}
    for k, slot in enumerate(plan.slots):
        fill, stroke = TRIAL_COLOURS[k % len(TRIAL_COLOURS)]
        roles[slot.trial.name] = Role(f"trial-{k}", fill, stroke, f"trial {slot.trial.name}: its own nodes (t{k})",
                                      link_colour=stroke)
    return roles


def plan_picture(plan: Plan, depth: int | None = None) -> Picture:
    """The merged graph, each node coloured by what it is to the trials."""
    if not isinstance(plan, Plan):
        raise PictureError(f"plan_picture draws an optimizer Plan, got {type(plan).__name__}")
    per_trial = trial_roles(plan)
    fixed = {SHARED: SHARED_ROLE, BATCHED: BATCHED_ROLE, GLUE: GLUE_ROLE}
    roles = {name: fixed.get(role.kind) or per_trial[role.trials[0]] for name, role in node_roles(plan).items()}
    # No frame per trial: a trial's nodes run before and after shared and batched ones, so one
    # frame would have to hold them all; its colour marks a trial instead (frames start at t0.stem).
    picture = graph_picture(plan.graph, depth=depth, roles=roles, unframed=frozenset(f"t{k}" for k in range(len(plan.slots))),
                            names=_trials_own_names(plan),
                            title=f"merged plan of {len(plan.slots)} trials, passes {', '.join(plan.passes) or 'none'}: "
                                  f"{len(plan.shared)} shared, {len(plan.batched)} batched nodes")
    picture.legend = [r for r in (*per_trial.values(), SHARED_ROLE, BATCHED_ROLE, GLUE_ROLE) if r in picture.legend] \
        + [r for r in picture.legend if r not in (*per_trial.values(), SHARED_ROLE, BATCHED_ROLE, GLUE_ROLE)]
    return picture


def _trials_own_names(plan: Plan) -> dict[str, str]:
    """Shared and batched nodes by the module paths the trials wrote (``stem.0 x3``), not merged names."""
    names = {}
    for merged in merged_nodes(plan):
        if merged.how == "own":
            continue
        paths = list(dict.fromkeys(name for _, name in merged.members))
        names[merged.name] = f"{paths[0]} x{len(merged.members)}" if len(paths) == 1 else " | ".join(paths)
    return names


# ---------------------------------------------------------------------- model spaces
def _drawn(site: ChoiceSite) -> Site:
    options = [Option(c.title, c.graph, {path: _drawn(s) for path, s in c.sites.items()}) for c in site.candidates]
    return Site(site.kind, site.label, options, list(site.notes), site.chained, site.skippable)


def space_sites(space: ModelSpace) -> dict[str, Site]:
    """The space's choice sites (``retiarii_ir.space.choice_sites``) in drawing terms."""
    return {path: _drawn(site) for path, site in choice_sites(space).items()}


def space_picture(space: ModelSpace, depth: int | None = None) -> Picture:
    """The base graph with every choice site drawn as a frame of its candidates (or a marked box)."""
    if not isinstance(space, ModelSpace):
        raise PictureError(f"space_picture draws a ModelSpace, got {type(space).__name__}")
    picture = graph_picture(space.base, depth=depth, sites=space_sites(space),
                            title=f"model space {space.base.name}: {len(space.search_space)} choices, "
                                  f"{space.size:,} architectures")
    for mutator in space.mutators:
        if not isinstance(mutator, SiteMutator):
            picture.notes.append(f"also decided by {type(mutator).__name__} (labels drawn nowhere: a custom mutator)")
    return picture


# ---------------------------------------------------------------------- one call
def picture_of(thing: Graph | ModelSpace | Plan, depth: int | None = None) -> Picture:
    if isinstance(thing, Plan):
        return plan_picture(thing, depth)
    if isinstance(thing, ModelSpace):
        return space_picture(thing, depth)
    if isinstance(thing, Graph):
        return graph_picture(thing, depth=depth)
    raise PictureError(f"show draws a Graph, a ModelSpace or an optimizer Plan, got {type(thing).__name__}")


def show(thing: Graph | ModelSpace | Plan, *paths: str | os.PathLike, depth: int | None = None) -> list[Path]:
    """Draw a graph, a model space or a merged plan into each of ``paths`` (.svg, .png)."""
    if not paths:
        raise PictureError("show needs at least one file to write (picture.svg or picture.png)")
    picture = picture_of(thing, depth)
    return [draw(picture, path) for path in paths]


def plan_of_samples(space: ModelSpace, samples: list[Mapping[str, Any]], passes: Iterable[str] | None = None) -> Plan:
    """The merged plan of ``samples`` of ``space``, trials set up as an experiment sets them up
    (the space's frozen weights kept frozen, so the plan may share them)."""
    from retiarii_ir.optimizer import PASSES, Trial, TrainConfig, initial_state, plan

    trials = []
    for k, sample in enumerate(samples):
        graph = space.freeze(sample)
        trial = Trial(f"trial{k}", graph, train=TrainConfig(seed=k))
        if kept := space.frozen_state(graph):
            trial = Trial(trial.name, graph, train=trial.train, frozen=tuple(kept),
                          initial_state={**initial_state(trial), **kept})
        trials.append(trial)
    return plan(trials, tuple(passes) if passes is not None else PASSES)


# ---------------------------------------------------------------------- in the experiment flow
PICTURE_FILE = "architecture.svg"


def dashboard_artifacts(artifacts: str) -> str:
    """Where an experiment keeps the files the dashboard shows (Optuna's artifact store)."""
    return os.path.join(artifacts, "dashboard")


def record_trial_picture(store, trial_id: int, graph: Graph, folder: str, artifacts: str) -> str | None:
    """Draw a finished trial's architecture into its folder and attach it to the trial in the
    store (an Optuna artifact: optuna-dashboard shows it on the trial's page). A picture is a
    help, not a result: when it cannot be made, the trial still stands (None)."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    path = os.path.join(folder, PICTURE_FILE)
    try:
        show(graph, path)
        base = dashboard_artifacts(artifacts)
        os.makedirs(base, exist_ok=True)
        upload_artifact(artifact_store=FileSystemArtifactStore(base), file_path=path,
                        study_or_trial=store.storage.get_trial(trial_id), storage=store.storage,
                        mimetype="image/svg+xml")
    except Exception:  # noqa: BLE001 - a full disk or a locked store must not cost the trial its result
        return None
    return path


def write_beside(graph: Graph, model_path: str) -> dict[str, str]:
    """``model.svg`` (and ``model.png`` where matplotlib is installed) beside ``model.py``."""
    from retiarii_ir.codegen import matplotlib_installed

    stem = os.path.splitext(model_path)[0]
    paths = {"picture": stem + ".svg"}
    if matplotlib_installed():
        paths["picture_png"] = stem + ".png"
    show(graph, *paths.values())
    return paths
