"""The paper's learned optimizers on a task family (``unf-meta-train --task``, ``unf-eval --task``): meta-train
one rule with PES on the family's training configs, save it (:mod:`unf.meta.export`), and evaluate it against Adam tuned on the
training config. The shipped optimizers come from recipes instead (:mod:`unf.recipes`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax

from unf import evaluate, lopt, tasks
from hetnet import distributed
from unf.meta import MetaTrainConfig, meta_train
from unf.meta.export import load_meta_params, read_meta_info, save_meta_params

OPTIMIZERS = ("unf", "per-parameter", "sgdm")


def build_lopt(name: str, task: tasks.Task):
    """Returns the learned optimizer ``name`` for ``task``'s weight space."""
    if name == "unf":
        return lopt.UNFOptimizer(task.spec)
    if name == "per-parameter":
        return lopt.PerParameterMLP()
    if name == "sgdm":
        return lopt.SGDMomentum()
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}.")


def run_meta_train(task_name: str, optimizer: str, cfg: MetaTrainConfig, out: Path, progress: bool = True) -> Path:
    """Meta-trains ``optimizer`` on the family ``task_name``; returns the folder holding its meta-params."""
    family = tasks.family(task_name)
    train_tasks = family.train_tasks()
    learned = build_lopt(optimizer, train_tasks[0])
    start = time.perf_counter()
    state = meta_train(learned, train_tasks, cfg, out, progress=progress)
    meta_params = distributed.to_host(state.meta_params)  # every process takes part in the gather
    info = {
        "optimizer": optimizer, "task": task_name, "train_configs": list(family.train_configs),
        "meta_steps": cfg.steps, "particles": cfg.es.num_particles, "truncation": cfg.es.truncation,
        "horizon": cfg.es.horizon, "sigma": cfg.es.sigma, "meta_lr": cfg.meta_lr, "seed": cfg.seed,
        "seconds": time.perf_counter() - start,
    }
    return save_meta_params(out / "meta_params", meta_params, info)


def load_contender(path: Path) -> evaluate.Contender:
    """Returns the evaluation contender for meta-params saved by ``unf-meta-train``."""
    info = read_meta_info(path)
    family = tasks.family(info["task"])
    learned = build_lopt(info["optimizer"], family.train_tasks()[0])
    meta_params, _ = load_meta_params(path, jax.eval_shape(learned.init_meta_params, jax.random.key(0)))
    name = f"{info['optimizer']} (meta-trained {info['meta_steps']} steps)"
    return evaluate.learned_contender(name, lambda task: build_lopt(info["optimizer"], task), meta_params)


def run_eval(task_name: str, contenders: list, steps: int, seeds: int, out: Path, tune_steps: int | None = None) -> str:
    """Tunes Adam on the training config, evaluates every contender on the held-out tasks, writes
    ``results.md``, ``results.json`` and ``loss_curves.png`` under ``out``; returns the markdown table."""
    family = tasks.family(task_name)
    seed_list = list(range(seeds))
    lr, scores = evaluate.tune_adam(family.train_tasks()[0], tune_steps or steps, seed_list[:2])
    rows = evaluate.evaluate(family.eval_tasks(), [evaluate.adam_contender(lr), *contenders], steps, seed_list)
    out.mkdir(parents=True, exist_ok=True)
    table = evaluate.markdown(rows)
    header = (f"Held-out {task_name} tasks, {steps} inner steps, {seeds} seeds (mean ± standard error); "
              f"Adam's learning rate {lr:g} chosen by a sweep on the training config: "
              + ", ".join(f"{k:g}: {v:.4f}" for k, v in scores.items()) + "\n\n")
    (out / "results.md").write_text(header + table)
    (out / "results.json").write_text(json.dumps({"adam_sweep": {str(k): v for k, v in scores.items()},
                                                  "steps": steps, "seeds": seeds, "table": header + table,
                                                  "rows": rows}, indent=1) + "\n")
    evaluate.plot(rows, out / "loss_curves.png")
    return header + table
