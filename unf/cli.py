"""Console scripts: ``unf-meta-train``, ``unf-eval`` and ``unf-main`` (the project's main job)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

from unf import evaluate, lopt, tasks
from unf.meta import MetaTrainConfig, PESConfig, load_meta_params, meta_train, save_meta_params
from unf.meta.train import read_meta_info

OPTIMIZERS = ("unf", "mlp", "sgdm")


def build_lopt(name: str, task: tasks.Task):
    """Returns the learned optimizer ``name`` for ``task``'s weight space."""
    if name == "unf":
        return lopt.UNFOptimizer(task.spec)
    if name == "mlp":
        return lopt.PerParameterMLP()
    if name == "sgdm":
        return lopt.SGDMomentum()
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}.")


def _add_pes_args(p: argparse.ArgumentParser, defaults: dict) -> None:
    p.add_argument("--steps", type=int, default=defaults["steps"], help="meta-steps")
    p.add_argument("--particles", type=int, default=defaults["particles"], help="parallel inner runs (even)")
    p.add_argument("--truncation", type=int, default=defaults["truncation"], help="inner steps per meta-step")
    p.add_argument("--horizon", type=int, default=defaults["horizon"], help="inner steps before an inner run restarts")
    p.add_argument("--sigma", type=float, default=0.01, help="ES perturbation std")
    p.add_argument("--meta-lr", type=float, default=3e-3)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)


def _config(args) -> MetaTrainConfig:
    return MetaTrainConfig(
        steps=args.steps, meta_lr=args.meta_lr, checkpoint_every=args.checkpoint_every, seed=args.seed,
        pes=PESConfig(num_particles=args.particles, truncation=args.truncation, horizon=args.horizon, sigma=args.sigma),
    )


def run_meta_train(task_name: str, optimizer: str, cfg: MetaTrainConfig, out: Path, progress: bool = True) -> Path:
    """Meta-trains ``optimizer`` on the family ``task_name``; returns the folder holding its meta-params."""
    family = tasks.family(task_name)
    train_tasks = family.train_tasks()
    learned = build_lopt(optimizer, train_tasks[0])
    start = time.perf_counter()
    state = meta_train(learned, train_tasks, cfg, out, progress=progress)
    info = {
        "optimizer": optimizer, "task": task_name, "train_configs": list(family.train_configs),
        "meta_steps": cfg.steps, "particles": cfg.pes.num_particles, "truncation": cfg.pes.truncation,
        "horizon": cfg.pes.horizon, "sigma": cfg.pes.sigma, "meta_lr": cfg.meta_lr, "seed": cfg.seed,
        "seconds": time.perf_counter() - start,
    }
    save_meta_params(out / "meta_params", state["meta_params"], info)
    return out / "meta_params"


def load_contender(path: Path) -> evaluate.Contender:
    """Returns the evaluation contender for meta-params saved by ``unf-meta-train``."""
    info = read_meta_info(path)
    family = tasks.family(info["task"])
    like = build_lopt(info["optimizer"], family.train_tasks()[0]).init(jax.random.key(0))
    meta_params, _ = load_meta_params(path, like)
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


def meta_train_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="unf-meta-train", description="Meta-train a learned optimizer with PES.")
    p.add_argument("--task", choices=tuple(tasks.FAMILIES), required=True)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="unf")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics.jsonl, meta_params/")
    p.add_argument("--quiet", action="store_true")
    _add_pes_args(p, {"steps": 100, "particles": 16, "truncation": 50, "horizon": 2000})
    args = p.parse_args(argv)
    try:
        path = run_meta_train(args.task, args.optimizer, _config(args), args.out, progress=not args.quiet)
    except (ValueError, FloatingPointError) as err:
        print(f"unf-meta-train: error: {err}", file=sys.stderr)
        return 2
    print(f"meta-params written to {path}")
    return 0


def eval_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="unf-eval", description="Train held-out tasks with every optimizer.")
    p.add_argument("--meta-params", type=Path, nargs="+", required=True, help="folders written by unf-meta-train")
    p.add_argument("--task", choices=tuple(tasks.FAMILIES), required=True)
    p.add_argument("--steps", type=int, default=500, help="inner training steps")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        contenders = [load_contender(path) for path in args.meta_params]
        print(run_eval(args.task, contenders, args.steps, args.seeds, args.out))
    except (ValueError, FileNotFoundError) as err:
        print(f"unf-eval: error: {err}", file=sys.stderr)
        return 2
    return 0


QUICK = {"steps": 30, "particles": 8, "truncation": 20, "horizon": 200, "eval_steps": 200, "seeds": 3}
FULL = {"steps": 1000, "particles": 16, "truncation": 50, "horizon": 2000, "eval_steps": 2000, "seeds": 5}


def main(argv=None) -> int:
    """The main job: meta-train the UNF optimizer and the per-parameter baseline on the transformer family, then
    evaluate both against tuned Adam on held-out tasks and print the table."""
    p = argparse.ArgumentParser(prog="unf-main", description=main.__doc__)
    p.add_argument("--task", choices=tuple(tasks.FAMILIES), default="transformer")
    p.add_argument("--full", action="store_true", help="the paper's budget (hours on a CPU) instead of the quick one")
    p.add_argument("--out", type=Path, default=Path("runs/main"))
    p.add_argument("--quiet", action="store_true")
    for name in QUICK:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, dest=name,
                       help=f"override the budget's {name} (quick {QUICK[name]}, full {FULL[name]})")
    args = p.parse_args(argv)
    budget = dict(FULL if args.full else QUICK)
    budget.update({k: getattr(args, k) for k in QUICK if getattr(args, k) is not None})
    contenders = []
    for name in ("unf", "mlp"):
        print(f"meta-training the {name} optimizer on the {args.task} family "
              f"({budget['steps']} meta-steps, {budget['particles']} particles, truncation {budget['truncation']})",
              flush=True)
        cfg = MetaTrainConfig(steps=budget["steps"], checkpoint_every=max(1, min(10, budget["steps"])), pes=PESConfig(
            num_particles=budget["particles"], truncation=budget["truncation"], horizon=budget["horizon"]))
        path = run_meta_train(args.task, name, cfg, args.out / name, progress=not args.quiet)
        contenders.append(load_contender(path))
    print("evaluating on held-out tasks", flush=True)
    print(run_eval(args.task, contenders, budget["eval_steps"], budget["seeds"], args.out / "eval"))
    print(f"results in {args.out / 'eval'} (results.md, results.json, loss_curves.png)")
    if not args.full:
        print(f"This was the quick budget ({budget['steps']} meta-steps); learned optimizers need far more to beat tuned "
              "Adam. `unf-main --full` runs the paper's budget (hours on a CPU; an accelerator is advised).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
