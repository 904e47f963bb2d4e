"""Console scripts: ``unf-meta-train``, ``unf-eval`` and ``unf-main`` (the project's main job)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import jax

from unf import evaluate, lopt, recipes, tasks
from unf.lopt import shipped
from unf.meta import ESConfig, MetaTrainConfig, load_meta_params, meta_train, save_meta_params
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
        es=ESConfig(estimator="pes", num_particles=args.particles, truncation=args.truncation, horizon=args.horizon,
                    sigma=args.sigma),
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
        "meta_steps": cfg.steps, "particles": cfg.es.num_particles, "truncation": cfg.es.truncation,
        "horizon": cfg.es.horizon, "sigma": cfg.es.sigma, "meta_lr": cfg.meta_lr, "seed": cfg.seed,
        "seconds": time.perf_counter() - start,
    }
    save_meta_params(out / "meta_params", state["meta_params"], info)
    return out / "meta_params"


def load_contender(path: Path) -> evaluate.Contender:
    """Returns the evaluation contender for meta-params saved by ``unf-meta-train``."""
    info = read_meta_info(path)
    family = tasks.family(info["task"])
    like = build_lopt(info["optimizer"], family.train_tasks()[0]).init_meta_params(jax.random.key(0))
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


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_description() -> str:
    """Returns the devices JAX runs on, e.g. ``cpu x1``."""
    devices = jax.devices()
    return f"{devices[0].platform}:{devices[0].device_kind} x{len(devices)}"


def run_recipe(name: str, kind: str, cfg: MetaTrainConfig, out: Path, command: str, progress: bool = True) -> Path:
    """Meta-trains the recipe's optimizer of ``kind`` with ``cfg``; writes ``out/export`` (``meta_params.npz`` and
    ``info.json``, the shipped format) and returns that folder."""
    recipe = recipes.recipe(name)
    learned = recipe.learned(kind)
    start = time.perf_counter()
    state = meta_train(learned, recipe.train_tasks(), cfg, out, progress=progress)
    seconds = time.perf_counter() - start
    export = out / "export"
    export.mkdir(parents=True, exist_ok=True)
    shipped.save_npz(export / "meta_params.npz", state["meta_params"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    timed = [r["seconds"] for r in records[len(records) // 10:]] or [float("nan")]
    info = {
        "recipe": name, "kind": kind, "command": command, "tasks": [t.label for t in recipe.train_tasks()],
        "meta_steps": cfg.steps, "meta_lr": cfg.meta_lr, "clip": cfg.clip, "seed": cfg.seed,
        "es": dataclasses.asdict(cfg.es), "device": device_description(),
        "date": datetime.date.today().isoformat(), "commit": _commit(),
        "seconds_this_session": round(seconds, 1), "meta_steps_per_second": round(len(timed) / sum(timed), 2),
        "final_meta_loss_mean_last_500": sum(r["meta_loss"] for r in records[-500:]) / max(1, len(records[-500:])),
    }
    (export / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return export


def _recipe_config(args, recipe: recipes.Recipe) -> MetaTrainConfig:
    cfg = recipe.config
    es = cfg.es
    es_over = {k: getattr(args, k) for k in ("estimator", "truncation", "horizon", "sigma", "rescale")
               if getattr(args, k) is not None}
    if args.particles is not None:
        es_over["num_particles"] = args.particles
    over = {k: getattr(args, k) for k in ("steps", "meta_lr", "checkpoint_every", "seed") if getattr(args, k) is not None}
    return dataclasses.replace(cfg, es=dataclasses.replace(es, **es_over), **over)


def meta_train_main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--recipe" in argv or any(a.startswith("--recipe=") for a in argv):
        return _recipe_main(argv)
    p = argparse.ArgumentParser(prog="unf-meta-train", description="Meta-train a learned optimizer with ES.")
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


def _recipe_main(argv) -> int:
    p = argparse.ArgumentParser(prog="unf-meta-train", description="Meta-train a learned optimizer with ES, by a "
                                "named recipe (the one that made a shipped optimizer) or on a task family.")
    p.add_argument("--recipe", choices=tuple(recipes.RECIPES), required=True)
    p.add_argument("--optimizer", choices=("unf-adam", "mlp-adam"), default="unf-adam")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics.jsonl, export/")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--estimator", choices=("nres", "pes"), default=None)
    for name, kind in (("steps", int), ("particles", int), ("truncation", int), ("horizon", int), ("sigma", float),
                       ("rescale", float), ("meta-lr", float), ("checkpoint-every", int), ("seed", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="override the recipe's value")
    args = p.parse_args(argv)
    try:
        recipe = recipes.recipe(args.recipe)
        for name in ("steps", "particles", "truncation", "horizon", "checkpoint_every"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}.")
        cfg = _recipe_config(args, recipe)
        command = "unf-meta-train " + " ".join(argv)
        export = run_recipe(args.recipe, args.optimizer, cfg, args.out, command, progress=not args.quiet)
    except (ValueError, FloatingPointError) as err:
        print(f"unf-meta-train: error: {err}", file=sys.stderr)
        return 2
    print(f"meta-params written to {export} (meta_params.npz, info.json: the shipped format)")
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
