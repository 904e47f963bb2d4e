"""Learned optimizers against tuned AdamW + cosine and tuned constant Adam on held-out tasks.

For every held-out task and optimizer: the final training loss (mean of the last 10% of steps) over seeds, its
ratio to tuned AdamW's, the speed-up (AdamW's steps over the steps the optimizer needs to reach AdamW's final loss on
the seed-mean curve), and divergences (runs ending non-finite or above their initial loss).
"""

from __future__ import annotations

import dataclasses
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


def steps_to_reach(curve: np.ndarray, target: float) -> int | None:
    """Returns the first (1-based) step at which the smoothed ``curve`` is at or below ``target``, or None."""
    hits = np.nonzero(_smooth(curve) <= target)[0]
    return int(hits[0]) + 1 if len(hits) else None


def _row(label: str, name: str, losses: np.ndarray, reference_final: float, steps: int) -> dict:
    finals = evaluate.final_loss(losses)
    finite = np.isfinite(finals)
    diverged = int(np.sum(~finite | (finals > losses[:, 0])))
    mean_final = float(np.mean(finals)) if finite.all() else float("inf")
    se = float(np.std(finals, ddof=1) / np.sqrt(len(finals))) if len(finals) > 1 and finite.all() else 0.0
    curve = np.mean(losses, axis=0)
    row = {"task": label, "optimizer": name, "final": mean_final, "final_se": se, "diverged": diverged,
           "seeds": int(losses.shape[0]), "steps": steps, "curve": curve.tolist()}
    reached = steps_to_reach(curve, reference_final) if np.all(np.isfinite(curve)) else None
    row["ratio_to_adamw"] = mean_final / reference_final
    row["steps_to_adamw_final"] = reached
    row["speedup"] = steps / reached if reached else None
    return row


def compare(heldout: Sequence[HeldOut], learned: Sequence[LearnedEntry], seeds: Sequence[int],
            tuning_seeds: Sequence[int], log: Callable[[str], None] = print) -> list[dict]:
    """Returns one row per (held-out task, optimizer), tuned AdamW first; see the module docstring."""
    rows = []
    for h in heldout:
        log(f"[{h.label}] tuning AdamW + cosine and constant Adam on {h.task.label}, {h.steps} steps")
        tuned = [baselines.tune_adamw_cosine(h.task, h.steps, tuning_seeds),
                 baselines.tune_constant_adam(h.task, h.steps, tuning_seeds)]
        adamw_losses = evaluate.train_losses(h.task, baselines.adamw_cosine(h.steps), np.asarray(tuned[0].hyper,
                                             np.float32), h.steps, seeds)
        target = float(np.mean(evaluate.final_loss(adamw_losses)))
        adam_losses = evaluate.train_losses(h.task, baselines.constant_adam, np.asarray(tuned[1].hyper, np.float32),
                                            h.steps, seeds)
        for name, losses, t in (("adamw+cosine (tuned)", adamw_losses, tuned[0]),
                                ("adam (tuned, constant lr)", adam_losses, tuned[1])):
            rows.append({**_row(h.label, name, losses, target, h.steps), "hyper": list(t.hyper),
                         "grid": len(t.scores), "edge_free": bool(t.edge_free)})
        for entry in learned:
            log(f"[{h.label}] training with {entry.name}")
            make = lambda meta, e=entry, s=h.steps: e.learned.opt_fn(meta, total_steps=s)  # noqa: E731
            losses = evaluate.train_losses(h.task, make, entry.meta_params, h.steps, seeds)
            rows.append(_row(h.label, entry.name, losses, target, h.steps))
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """Returns the comparison as a markdown table (best final loss per task in bold)."""
    best: dict = {}
    for r in rows:
        best[r["task"]] = min(best.get(r["task"], np.inf), r["final"])
    lines = ["| held-out task | optimizer | final loss | / tuned AdamW | speed-up vs AdamW | diverged | tuned (lr, warm-up) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        final = f"{r['final']:.4f} ± {r['final_se']:.4f}"
        if r["final"] == best[r["task"]]:
            final = f"**{final}**"
        if r["optimizer"].startswith("adamw+cosine"):
            speed = "reference"
        else:
            speed = f"{r['speedup']:.2f}x" if r.get("speedup") else "not reached"
        hyper = ", ".join(f"{v:.3g}" for v in r["hyper"]) + ("" if r["edge_free"] else " (edge)") if "hyper" in r else ""
        lines.append(f"| {r['task']} | {r['optimizer']} | {final} | {r['ratio_to_adamw']:.3f} | {speed} | "
                     f"{r['diverged']}/{r['seeds']} | {hyper} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: str | Path | None = None):
    """Returns (and with ``path`` writes) a figure of seed-mean loss curves, one panel per held-out task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cols = min(3, len(tasks))
    nrows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, task in zip(axes.ravel(), tasks):
        for r in rows:
            if r["task"] == task:
                curve = np.asarray(r["curve"], np.float64)
                ax.plot(np.arange(1, len(curve) + 1), _smooth(curve), label=r["optimizer"])
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
