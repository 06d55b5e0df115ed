"""``retiarii plot``: one PNG that shows how the search went. Metric per trial and over time,
each with the best-so-far line, and for every choice the metric of each of its values (which
choices win). Reads only the store."""

from __future__ import annotations

import math
import os

from .experiment_errors import ConfigError
from .store import Store


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
    ax.set(xlabel="trial", ylabel="metric", title=f"{name}: metric per trial")
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
        seen = {str(r.sample[label])[:40] for r in done if label in r.sample}
        values = ([str(v)[:40] for v in candidates.get(label, ()) if str(v)[:40] in seen] or sorted(seen))
        values = values[:MAX_PLOTTED_VALUES]
        for x, value in enumerate(values):
            ys = [r.metric for r in done if str(r.sample.get(label))[:40] == value]
            ax.scatter([x] * len(ys), ys, s=14, alpha=0.6, color="C0")
            ax.scatter([x], [sum(ys) / len(ys)], marker="_", s=400, color="C3")
        ax.set_xticks(range(len(values)), values, fontsize=8)
        ax.set(title=f"choice {label[:60]!r} (red: mean)", ylabel="metric")
    for j in range(len(shown), (rows - 1) * columns):
        axes[1 + j // columns][j % columns].axis("off")
    if len(labels) > len(shown):
        fig.suptitle(f"the first {len(shown)} of {len(labels)} choices", fontsize=9)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return {"numbers": numbers, "metrics": metrics, "best": best, "labels": shown, "choices": len(labels)}
