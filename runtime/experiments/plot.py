"""``retiarii plot``: one PNG that shows how the search went. Metric per trial and over time,
each with the best-so-far line, and for every choice the metric of each of its values (which
choices win). Reads only the store."""

from __future__ import annotations

import math
import os

from retiarii_ir.errors import first_line

from retiarii_ir.runtime.errors import ConfigError
from retiarii_ir.runtime.experiments.store import Store
from retiarii_ir.runtime.experiments.store_schema import printable


def best_so_far(values: list[float], maximize: bool) -> list[float]:
    out, best = [], None
    for v in values:
        best = v if best is None else (max(best, v) if maximize else min(best, v))
        out.append(best)
    return out


MAX_PLOTTED_CHOICES = 12  # one panel each: more would make an unreadable figure (and an unbounded one)
MAX_PLOTTED_VALUES = 40  # candidates shown along one panel's axis

MISSING_MATPLOTLIB = "plot needs matplotlib: pip install -e '.[plot]'"


def matplotlib_installed() -> bool:
    """Whether plots can be drawn (matplotlib is an optional extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_experiment(store: Store, name: str, path: str) -> dict:
    """Write the PNG; returns the series plotted (trial numbers, metrics, best so far)."""
    if not matplotlib_installed():
        raise ConfigError(MISSING_MATPLOTLIB)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study_id = store.study_id(name)
    maximize = store.maximize(study_id)
    records = sorted(store.trials(study_id), key=lambda r: r.number)
    done = [r for r in records if r.state == "COMPLETE" and r.metric is not None]
    failed = [r for r in records if r.state == "FAIL" and not r.interrupted]
    if not done:
        raise ConfigError(f"experiment {name!r} has no finished trial to plot yet")
    labels = list(dict.fromkeys(label for r in done for label in r.sample))
    shown = labels[:MAX_PLOTTED_CHOICES]
    candidates = {c["label"]: c["values"] for c in store.config(study_id).get("search_space", [])}
    try:
        _draw(plt, path, name, records, done, failed, maximize, labels, shown, candidates)
    except (ValueError, OverflowError, RuntimeError, ArithmeticError) as e:  # values no axis can hold
        plt.close("all")
        raise ConfigError(f"cannot plot experiment {printable(name)!r}: {type(e).__name__}: {first_line(e)}") from None
    metrics = [r.metric for r in done]
    return {"numbers": [r.number for r in done], "metrics": metrics, "best": best_so_far(metrics, maximize),
            "labels": shown, "choices": len(labels)}


def _text(value) -> str:
    """A stored string as figure text: printable, short, and never read as matplotlib's math."""
    return printable(value, 40).replace("$", r"\$")


def _draw(plt, path: str, name: str, records, done, failed, maximize: bool, labels, shown, candidates) -> None:
    columns = 2
    rows = 1 + math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(11, 3.6 * rows), squeeze=False)
    numbers, metrics = [r.number for r in done], [r.metric for r in done]
    best = best_so_far(metrics, maximize)
    word = "best so far (max)" if maximize else "best so far (min)"

    ax = axes[0][0]
    ax.scatter(numbers, metrics, s=18, label="finished trial")
    ax.step(numbers, best, where="post", color="C3", label=word)
    if failed:
        ax.scatter([r.number for r in failed], [min(metrics)] * len(failed), marker="x", color="gray",
                   label=f"failed ({len(failed)})")
    ax.set(xlabel="trial", ylabel="metric", title=f"{_text(name)}: metric per trial")
    ax.legend(fontsize=8)

    by_time = sorted((r for r in done if r.finished is not None), key=lambda r: r.finished)
    starts = [r.started for r in records if r.started is not None]
    t0 = min(starts) if starts else (by_time[0].finished if by_time else None)
    minutes = [(r.finished - t0).total_seconds() / 60 for r in by_time]
    ax = axes[0][1]
    ax.scatter(minutes, [r.metric for r in by_time], s=18)
    ax.step(minutes, best_so_far([r.metric for r in by_time], maximize), where="post", color="C3", label=word)
    ax.set(xlabel="minutes since the first trial started", ylabel="metric", title="metric over time")
    ax.legend(fontsize=8)

    for i, label in enumerate(shown):
        ax = axes[1 + i // columns][i % columns]
        seen = {_text(r.sample[label]) for r in done if label in r.sample}
        values = ([_text(v) for v in candidates.get(label, ()) if _text(v) in seen] or sorted(seen))
        values = values[:MAX_PLOTTED_VALUES]
        for x, value in enumerate(values):
            ys = [r.metric for r in done if _text(r.sample.get(label)) == value]
            ax.scatter([x] * len(ys), ys, s=14, alpha=0.6, color="C0")
            ax.scatter([x], [sum(ys) / len(ys)], marker="_", s=400, color="C3")
        ax.set_xticks(range(len(values)), values, fontsize=8)
        ax.set(title=f"choice {_text(label)} (red: mean)", ylabel="metric")
    for j in range(len(shown), (rows - 1) * columns):
        axes[1 + j // columns][j % columns].axis("off")
    if len(labels) > len(shown):
        fig.suptitle(f"the first {len(shown)} of {len(labels)} choices", fontsize=9)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fig.savefig(path, dpi=90)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from None
    finally:
        plt.close(fig)
