"""A recipe's meta-training run (``unf-meta-train --recipe``): meta-train the recipe's optimizer, then export its
meta-params in the shipped format with how they were made. The paper rules' runs are :mod:`unf.family_runs`."""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import time
from pathlib import Path

from hetnet import distributed
from unf import recipes
from unf.meta import MetaTrainConfig, export, meta_train


def _commit() -> str:
    """Returns the checkout's commit, with ``+uncommitted`` when its tracked files differ from it."""
    where = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=where)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=where)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = head.stdout.strip() or "unknown"
    return commit + ("+uncommitted" if dirty.stdout.strip() else "")


def run_recipe(name: str, kind: str, cfg: MetaTrainConfig, out: Path, command: str, progress: bool = True,
               num_tasks: int | None = None, correction: bool = True) -> Path:
    """Meta-trains the recipe's optimizer of ``kind`` (without its equivariant correction when ``correction`` is
    False) with ``cfg`` on its tasks (the first ``num_tasks`` of them, when given); writes ``out/export``
    (``meta_params.npz`` and ``info.json``, the shipped format) and returns that folder."""
    recipe = recipes.recipe(name)
    learned = recipe.learned(kind, correction)
    train_tasks = recipe.train_tasks()[:num_tasks]
    commit = _commit()  # the code this run starts from, before anything can change under it
    start = time.perf_counter()
    state = meta_train(learned, train_tasks, cfg, out, progress=progress, start=recipe.start(kind))
    seconds = time.perf_counter() - start
    meta_params = distributed.to_host(state.meta_params)  # every process takes part in the gather
    if not distributed.is_main():
        return out / "export"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    timed = [r["seconds"] for r in records[len(records) // 10:]] or [float("nan")]
    info = {
        "recipe": name, "kind": kind, "command": command, "tasks": [t.label for t in train_tasks],
        "meta_steps": cfg.steps, "meta_lr": cfg.meta_lr, "clip": cfg.clip, "seed": cfg.seed,
        "es": dataclasses.asdict(cfg.es), "device": distributed.device_description(),
        "date": datetime.date.today().isoformat(), "commit": commit,
        "seconds_this_session": round(seconds, 1), "meta_steps_per_second": round(len(timed) / sum(timed), 2),
        "final_meta_loss_mean_last_500": sum(r["meta_loss"] for r in records[-500:]) / max(1, len(records[-500:])),
        "correction": correction, "keep_in_domain": cfg.keep_in_domain,
    }
    return export.save_meta_params(out / "export", meta_params, info)
