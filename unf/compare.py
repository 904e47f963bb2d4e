"""Learned optimizers against tuned AdamW + cosine and tuned constant Adam on held-out tasks, on held-out loss.

For every held-out task and optimizer: the final loss on held-out text (files never trained on) over seeds, its
ratio to tuned AdamW's, the speed-up (AdamW's steps over the steps the optimizer needs to reach AdamW's final
held-out loss on the seed-mean held-out curve), and divergences (runs ending non-finite or above their initial
training loss). Baselines are tuned on the held-out loss of their own seeds, or taken from settings tuned earlier
(``tuned``: the shipped optimizer carries those of its recipe's held-out tasks).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from unf import baselines, evaluate
from unf.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """A held-out task: what differs from meta-training (``label``), the task, and how many steps to train."""

    label: str
    task: Task
    steps: int

    @property
    def key(self) -> str:
        """The task and run length: what tuned baseline settings are stored under."""
        return f"{self.task.label} steps={self.steps}"


@dataclasses.dataclass(frozen=True)
class LearnedEntry:
    """A learned optimizer under evaluation: its learned-optimizer object and meta-params."""

    name: str
    learned: Any
    meta_params: Any


def _smooth(curve: np.ndarray) -> np.ndarray:
    # The final-loss window, so a curve's last smoothed value is its final loss.
    window = max(1, len(curve) // 10)
    padded = np.concatenate([np.full(window - 1, curve[0]), curve])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def steps_to_reach(curve: np.ndarray, target: float, steps: int) -> float | None:
    """Returns the step at which a held-out curve (measured every ``steps / len(curve)`` steps) first reaches
    ``target``, linearly interpolated between measurements, or None."""
    xs = np.arange(1, len(curve) + 1) * steps / len(curve)
    hit = np.nonzero(np.asarray(curve) <= target)[0]
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0:
        return float(xs[0])
    frac = (curve[i - 1] - target) / max(curve[i - 1] - curve[i], 1e-12)
    return float(xs[i - 1] + frac * (xs[i] - xs[i - 1]))


@dataclasses.dataclass(frozen=True)
class ComparisonRow:
    """One optimizer on one held-out task: its seed-mean final held-out loss (``final``, standard error
    ``final_se``), the ratio to tuned AdamW's, the step at which its seed-mean held-out curve reaches AdamW's final
    loss (None: never) and the speed-up that makes, divergences out of ``seeds``, the seed-mean training
    (``curve``) and held-out (``valid_curve``) curves; for a tuned baseline its settings (``hyper``), the grid size
    (None: settings tuned earlier) and whether the best learning rate was interior."""

    task: str
    optimizer: str
    final: float
    final_se: float
    diverged: int
    seeds: int
    steps: int
    curve: list
    valid_curve: list
    ratio_to_adamw: float
    steps_to_adamw_final: float | None
    speedup: float | None
    hyper: list | None = None
    grid: int | None = None
    edge_free: bool | None = None

    def as_dict(self) -> dict:
        """Returns the row as plain JSON-ready values."""
        return dataclasses.asdict(self)


def _row(label: str, name: str, train: np.ndarray, valid: np.ndarray, reference_final: float,
         steps: int) -> ComparisonRow:
    finals = valid[:, -1]
    finite = np.isfinite(finals)
    diverged = int(np.sum(~finite | (finals > train[:, 0])))
    mean_final = float(np.mean(finals)) if finite.all() else float("inf")
    se = float(np.std(finals, ddof=1) / np.sqrt(len(finals))) if len(finals) > 1 and finite.all() else 0.0
    curve = np.mean(valid, axis=0)
    reached = steps_to_reach(curve, reference_final, steps) if np.all(np.isfinite(curve)) else None
    return ComparisonRow(task=label, optimizer=name, final=mean_final, final_se=se, diverged=diverged,
                         seeds=int(valid.shape[0]), steps=steps, curve=np.mean(train, axis=0).tolist(),
                         valid_curve=curve.tolist(), ratio_to_adamw=mean_final / reference_final,
                         steps_to_adamw_final=reached, speedup=steps / reached if reached else None)


def _maker(learned: Any, steps: int) -> Callable[[Any], Any]:
    return lambda meta_params: learned.opt_fn(meta_params, total_steps=steps)


_shared_maker = functools.lru_cache(maxsize=32)(_maker)


def learned_maker(learned: Any, steps: int) -> Callable[[Any], Any]:
    """Returns ``make_opt(meta_params)`` for ``learned`` over runs of ``steps`` steps: one object per pair, so every
    set of meta-params of the same learned optimizer (the shipped ones, a self-trained run's) shares one compiled
    trainer. A learned optimizer that is not hashable (the protocol does not ask it to be) gets a maker of its own
    per call, and its runs compile their own trainers."""
    try:
        hash(learned)
    except TypeError:
        return _maker(learned, steps)
    return _shared_maker(learned, steps)


BASELINES = (("adamw+cosine", "adamw+cosine (tuned)"), ("adam", "adam (tuned, constant lr)"))


def _baselines(h: HeldOut, tuning_seeds: Sequence[int], tuned: dict | None, log) -> dict:
    """Returns ``{name: (make_opt, hyper, grid size or None, edge_free)}``, from ``tuned`` where it holds ``h``."""
    makes = {"adamw+cosine": baselines.adamw_cosine(h.steps), "adam": baselines.constant_adam}
    if tuned is not None and h.key in tuned:
        return {name: (makes[name], tuple(tuned[h.key][name]), None, True) for name, _ in BASELINES}
    log(f"[{h.label}] tuning AdamW + cosine and constant Adam on {h.task.label}, {h.steps} steps")
    found = {"adamw+cosine": baselines.tune_adamw_cosine(h.task, h.steps, tuning_seeds, "valid"),
             "adam": baselines.tune_constant_adam(h.task, h.steps, tuning_seeds, "valid")}
    return {name: (makes[name], t.hyper, len(t.scores), t.edge_free) for name, t in found.items()}


def compare(heldout: Sequence[HeldOut], learned: Sequence[LearnedEntry], seeds: Sequence[int],
            tuning_seeds: Sequence[int], log: Callable[[str], None] = print,
            tuned: dict | None = None) -> list[ComparisonRow]:
    """Returns one row per (held-out task, optimizer), tuned AdamW first; see the module docstring. ``tuned`` maps
    :attr:`HeldOut.key` to ``{"adamw+cosine": [lr, warm-up], "adam": [lr]}``; tasks it lacks are tuned here."""
    rows = []
    for h in heldout:
        points = evaluate.valid_points(h.steps)
        runs = {}
        for name, (make, hyper, grid, edge_free) in _baselines(h, tuning_seeds, tuned, log).items():
            runs[name] = evaluate.train_valid_losses(h.task, make, np.asarray(hyper, np.float32), h.steps, seeds,
                                                     points=points), hyper, grid, edge_free
        target = float(np.mean(runs["adamw+cosine"][0][1][:, -1]))
        for name, shown in BASELINES:
            (train, valid), hyper, grid, edge_free = runs[name]
            rows.append(dataclasses.replace(_row(h.label, shown, train, valid, target, h.steps), hyper=list(hyper),
                                            grid=grid, edge_free=bool(edge_free)))
        for entry in learned:
            log(f"[{h.label}] training with {entry.name}")
            train, valid = evaluate.train_valid_losses(h.task, learned_maker(entry.learned, h.steps),
                                                       entry.meta_params, h.steps, seeds, points=points)
            rows.append(_row(h.label, entry.name, train, valid, target, h.steps))
    return rows


def markdown(rows: Sequence[ComparisonRow]) -> str:
    """Returns the comparison as a markdown table (best final loss per task in bold)."""
    best: dict = {}
    for r in rows:
        best[r.task] = min(best.get(r.task, np.inf), r.final)
    lines = ["| held-out task | optimizer | final held-out loss | / tuned AdamW | speed-up vs AdamW | diverged | "
             "tuned (lr, warm-up) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        final = f"{r.final:.4f} ± {r.final_se:.4f}"
        if r.final == best[r.task]:
            final = f"**{final}**"
        if r.optimizer.startswith("adamw+cosine"):
            speed = "reference"
        else:
            speed = f"{r.speedup:.2f}x" if r.speedup else "not reached"
        hyper = ", ".join(f"{v:.3g}" for v in r.hyper) + ("" if r.edge_free else " (edge)") if r.hyper else ""
        lines.append(f"| {r.task} | {r.optimizer} | {final} | {r.ratio_to_adamw:.3f} | {speed} | "
                     f"{r.diverged}/{r.seeds} | {hyper} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[ComparisonRow], path: str | Path | None = None):
    """Returns (and with ``path`` writes) a figure of seed-mean loss curves, one panel per held-out task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in rows))
    cols = min(3, len(tasks))
    nrows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, task in zip(axes.ravel(), tasks):
        for r in rows:
            if r.task == task:
                curve = np.asarray(r.curve, np.float64)
                ax.plot(np.arange(1, len(curve) + 1), _smooth(curve), label=r.optimizer)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (smoothed)")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
