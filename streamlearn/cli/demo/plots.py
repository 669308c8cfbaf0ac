"""The demo's two PNG plots, drawn with matplotlib's Agg backend (no display needed).

matplotlib is an optional extra (``demo``): it is imported only when a plot is
drawn, and :func:`available` says whether it can be.

- ``metrics.png``: prequential accuracy and log-loss over time, windowed and
  cumulative, with each version's commit marked and the drift point drawn.
- ``freshness.png``: the distribution of freshness with p50/p95/p99 and the
  goals, and freshness over the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_metrics", "plot_freshness", "available", "MISSING"]

#: The one line said when matplotlib is missing.
MISSING = ("the report has no plots: they need matplotlib, the demo extra "
           "(pip install 'streamlearn[demo]')")


def available() -> bool:
    """Whether matplotlib can be imported (the ``demo`` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(
    path: Path,
    times_s: Sequence[float],
    windowed: Sequence[dict[str, float]],
    cumulative: Sequence[dict[str, float]],
    *,
    drift_s: float | None,
    chance: dict[str, float],
    title: str,
) -> Path:
    """Accuracy (top) and log-loss (bottom) per version over seconds since the stream began."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for ax, name, label in ((axes[0], "Accuracy", "accuracy"), (axes[1], "LogLoss", "log-loss")):
        xs_w = [t for t, m in zip(times_s, windowed, strict=True) if name in m]
        ax.plot(xs_w, [m[name] for m in windowed if name in m], lw=1.4,
                label=f"prequential {label}, recent window")
        xs_c = [t for t, m in zip(times_s, cumulative, strict=True) if name in m]
        ax.plot(xs_c, [m[name] for m in cumulative if name in m], lw=1.0, ls="--",
                color="grey", label=f"prequential {label}, cumulative")
        if name in chance:
            ax.axhline(chance[name], color="black", lw=0.8, ls=":",
                       label=f"chance ({chance[name]:.3f})")
        if drift_s is not None:
            ax.axvline(drift_s, color="tab:red", lw=1.5, label="concept drift")
        # every version published, as a tick along the top of the axes
        ax.plot(times_s, [1.0] * len(times_s), "|", color="tab:green", ms=7,
                transform=ax.get_xaxis_transform(), label="version published")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[1].set_xlabel("seconds since the steady stream began")
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_freshness(
    path: Path,
    latencies_ms: Sequence[float],
    sent_s: Sequence[float],
    figures: dict,
    *,
    goals_ms: tuple[float, float] = (1000.0, 2000.0),
    title: str,
) -> Path:
    """Histogram of freshness (left) and freshness of each sample over the run (right)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if latencies_ms:
        left.hist(latencies_ms, bins=50, color="tab:blue", alpha=0.8)
        right.plot(sent_s, latencies_ms, ".", ms=2, alpha=0.5)
    for q, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
        value = figures.get(f"{q}_ms")
        if value is not None:
            left.axvline(value, color=color, lw=1.5, label=f"{q} {value:.0f} ms")
            right.axhline(value, color=color, lw=1.0, label=f"{q} {value:.0f} ms")
    for goal, ls in zip(goals_ms, (":", "--"), strict=True):
        left.axvline(goal, color="black", lw=0.8, ls=ls, label=f"goal {goal:.0f} ms")
    left.set_xlabel("freshness (ms): Kafka append → first prediction by a version reflecting it")
    left.set_ylabel("sampled messages")
    left.legend(fontsize=8)
    right.set_xlabel("seconds since the steady stream began (append time)")
    right.set_ylabel("freshness (ms)")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
