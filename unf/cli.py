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

from hetnet import distributed
from unf import compare, evaluate, lopt, recipes, tasks
from unf.lopt import shipped
from unf.meta import ESConfig, MetaTrainConfig, load_meta_params, meta_train, save_meta_params
from unf.meta.train import read_meta_info

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


def _add_pes_args(p: argparse.ArgumentParser, defaults: dict) -> None:
    p.add_argument("--steps", type=int, default=defaults["steps"], help="meta-steps")
    p.add_argument("--particles", type=int, default=defaults["particles"], help="parallel inner runs (even)")
    p.add_argument("--truncation", type=int, default=defaults["truncation"], help="inner steps per meta-step")
    p.add_argument("--horizon", type=int, default=defaults["horizon"], help="inner steps before an inner run restarts")
    p.add_argument("--sigma", type=float, default=0.01, help="ES perturbation std")
    p.add_argument("--meta-lr", type=float, default=3e-3)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)


def _add_distributed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-process run found by jax.distributed's cluster detection (SLURM, MPI, TPU "
                   "pods); runs started by python -m hetnet.launch join without it")


def _config(args) -> MetaTrainConfig:
    return MetaTrainConfig(
        steps=args.steps, meta_lr=args.meta_lr, checkpoint_every=args.checkpoint_every, seed=args.seed,
        es=ESConfig(estimator="pes", num_particles=args.particles, truncation=args.truncation,
                    horizons=(args.horizon,), sigma=args.sigma),
    )


def run_meta_train(task_name: str, optimizer: str, cfg: MetaTrainConfig, out: Path, progress: bool = True) -> Path:
    """Meta-trains ``optimizer`` on the family ``task_name``; returns the folder holding its meta-params."""
    family = tasks.family(task_name)
    train_tasks = family.train_tasks()
    learned = build_lopt(optimizer, train_tasks[0])
    start = time.perf_counter()
    state = meta_train(learned, train_tasks, cfg, out, progress=progress)
    # Every process takes part in the orbax save; process 0 writes the description.
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


def device_description() -> str:
    """Returns the devices JAX runs on, e.g. ``cpu:cpu x1``, or ``... x4 over 2 processes``."""
    devices = jax.devices()
    where = f" over {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return f"{devices[0].platform}:{devices[0].device_kind} x{len(devices)}{where}"


def run_recipe(name: str, kind: str, cfg: MetaTrainConfig, out: Path, command: str, progress: bool = True,
               num_tasks: int | None = None) -> Path:
    """Meta-trains the recipe's optimizer of ``kind`` with ``cfg`` on its tasks (the first ``num_tasks`` of them,
    when given); writes ``out/export`` (``meta_params.npz`` and ``info.json``, the shipped format) and returns that
    folder."""
    recipe = recipes.recipe(name)
    learned = recipe.learned(kind)
    train_tasks = recipe.train_tasks()[:num_tasks]
    commit = _commit()  # the code this run starts from, before anything can change under it
    start = time.perf_counter()
    state = meta_train(learned, train_tasks, cfg, out, progress=progress, start=recipe.start(kind))
    seconds = time.perf_counter() - start
    export = out / "export"
    if not distributed.is_main():
        return export
    export.mkdir(parents=True, exist_ok=True)
    shipped.save_npz(export / "meta_params.npz", state["meta_params"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    timed = [r["seconds"] for r in records[len(records) // 10:]] or [float("nan")]
    info = {
        "recipe": name, "kind": kind, "command": command, "tasks": [t.label for t in train_tasks],
        "meta_steps": cfg.steps, "meta_lr": cfg.meta_lr, "clip": cfg.clip, "seed": cfg.seed,
        "es": dataclasses.asdict(cfg.es), "device": device_description(),
        "date": datetime.date.today().isoformat(), "commit": commit,
        "seconds_this_session": round(seconds, 1), "meta_steps_per_second": round(len(timed) / sum(timed), 2),
        "final_meta_loss_mean_last_500": sum(r["meta_loss"] for r in records[-500:]) / max(1, len(records[-500:])),
    }
    (export / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return export


def _recipe_config(args, recipe: recipes.Recipe) -> MetaTrainConfig:
    cfg = recipe.config
    es = cfg.es
    es_over = {k: getattr(args, k) for k in ("estimator", "truncation", "sigma", "rescale") if getattr(args, k) is not None}
    if args.horizons is not None:
        es_over["horizons"] = tuple(args.horizons)
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
    _add_distributed_arg(p)
    _add_pes_args(p, {"steps": 100, "particles": 16, "truncation": 50, "horizon": 2000})
    args = p.parse_args(argv)
    try:
        distributed.initialize(auto=args.distributed)
        path = run_meta_train(args.task, args.optimizer, _config(args), args.out, progress=not args.quiet)
    except (ValueError, FloatingPointError) as err:
        print(f"unf-meta-train: error: {err}", file=sys.stderr)
        return 2
    distributed.main_print(f"meta-params written to {path}")
    return 0


def _recipe_main(argv) -> int:
    p = argparse.ArgumentParser(prog="unf-meta-train", description="Meta-train a learned optimizer with ES, by a "
                                "named recipe (the one that made a shipped optimizer) or on a task family.")
    p.add_argument("--recipe", choices=tuple(recipes.RECIPES), required=True)
    p.add_argument("--optimizer", choices=recipes.KINDS, default="unf-muon")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics.jsonl, export/")
    p.add_argument("--quiet", action="store_true")
    _add_distributed_arg(p)
    p.add_argument("--estimator", choices=("nres", "pes"), default=None)
    for name, kind in (("steps", int), ("particles", int), ("truncation", int), ("sigma", float),
                       ("rescale", float), ("meta-lr", float), ("checkpoint-every", int), ("seed", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="override the recipe's value")
    p.add_argument("--horizons", type=int, nargs="+", default=None, help="override the recipe's run lengths")
    args = p.parse_args(argv)
    try:
        distributed.initialize(auto=args.distributed)
        recipe = recipes.recipe(args.recipe)
        for name in ("steps", "particles", "truncation", "checkpoint_every"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}.")
        cfg = _recipe_config(args, recipe)
        command = "unf-meta-train " + " ".join(argv)
        export = run_recipe(args.recipe, args.optimizer, cfg, args.out, command, progress=not args.quiet)
    except (ValueError, FloatingPointError) as err:
        print(f"unf-meta-train: error: {err}", file=sys.stderr)
        return 2
    distributed.main_print(f"meta-params written to {export} (meta_params.npz, info.json: the shipped format)")
    return 0


def load_export(path: Path) -> compare.LearnedEntry:
    """Returns the evaluation entry for a folder in the shipped format (``meta_params.npz`` + ``info.json``, as
    ``unf-meta-train --recipe`` writes under ``export/``)."""
    if not (path / "info.json").exists() or not (path / "meta_params.npz").exists():
        raise FileNotFoundError(f"no exported meta-params at {str(path)!r}: expected meta_params.npz and info.json, "
                                "as unf-meta-train --recipe writes under RUN/export.")
    info = json.loads((path / "info.json").read_text())
    learned = recipes.recipe(info["recipe"]).learned(info["kind"])
    meta = shipped.load_npz(path / "meta_params.npz", jax.eval_shape(learned.init_meta_params, jax.random.key(0)))
    return compare.LearnedEntry(f"{info['kind']} ({info['meta_steps']} meta-steps)", learned, meta)


def _recipe_eval_main(argv) -> int:
    p = argparse.ArgumentParser(prog="unf-eval", description="Train a recipe's held-out tasks with learned optimizers "
                                "against tuned AdamW + cosine and tuned constant Adam.")
    p.add_argument("--recipe", choices=tuple(recipes.RECIPES), required=True)
    p.add_argument("--meta-params", type=Path, nargs="*", default=[], help="export folders of unf-meta-train --recipe")
    p.add_argument("--pretrained", action="store_true", help="also evaluate the shipped optimizer of this recipe")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--tuning-seeds", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        if args.seeds < 1 or args.tuning_seeds < 1:
            raise ValueError(f"--seeds and --tuning-seeds must be positive, got {args.seeds} and {args.tuning_seeds}.")
        entries = [load_export(path) for path in args.meta_params]
        if args.pretrained:
            learned, meta = lopt.load_pretrained(args.recipe)
            entries.append(compare.LearnedEntry(f"{shipped.info(args.recipe)['kind']} (shipped)", learned, meta))
        if not entries:
            raise ValueError("give --meta-params folders, --pretrained, or both.")
        recipe = recipes.recipe(args.recipe)
        rows = compare.compare(recipe.heldout(), entries, list(range(args.seeds)),
                               list(range(100, 100 + args.tuning_seeds)), tuned=shipped.tuned_baselines(args.recipe))
        print(_write_comparison(rows, args.out, f"Held-out tasks of the {args.recipe} recipe, {args.seeds} seeds; "
                                f"baselines tuned per task on {args.tuning_seeds} other seeds."))
    except (ValueError, FileNotFoundError) as err:
        print(f"unf-eval: error: {err}", file=sys.stderr)
        return 2
    return 0


def eval_main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--recipe" in argv or any(a.startswith("--recipe=") for a in argv):
        return _recipe_eval_main(argv)
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


def _write_comparison(rows: list, out: Path, header: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    table = header + "\n\n" + compare.markdown(rows)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    compare.plot(rows, out / "loss_curves.png")
    return table


def main(argv=None) -> int:
    """The main job: the shipped learned optimizer against tuned AdamW + cosine on held-out transformers, then a
    short meta-training run from scratch with the same recipe, evaluated the same way."""
    p = argparse.ArgumentParser(prog="unf-main", description=main.__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/main"))
    p.add_argument("--seeds", type=int, default=2, help="evaluation seeds per task")
    p.add_argument("--tuning-seeds", type=int, default=2, help="seeds for tuning the baselines (separate from --seeds)")
    p.add_argument("--tasks", type=int, default=1, help="how many of the recipe's held-out tasks to evaluate")
    p.add_argument("--meta-steps", type=int, default=50, help="meta-steps of the from-scratch demonstration run")
    p.add_argument("--retune", action="store_true",
                   help="tune the baselines here instead of using the settings shipped with the optimizer")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    for name in ("seeds", "tasks", "meta_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.tuning_seeds < 1:
        p.error(f"--tuning-seeds must be a positive integer, got {args.tuning_seeds}")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    recipe = recipes.recipe("transformer-lm")
    heldout = recipe.heldout()[: args.tasks]
    seeds, tuning = list(range(args.seeds)), list(range(100, 100 + args.tuning_seeds))
    tuned = None if args.retune else shipped.tuned_baselines("transformer-lm")
    how = "tuned per task on other seeds" + ("" if args.retune else " (settings shipped with the optimizer; "
                                            "--retune tunes them here)")

    made = shipped.info("transformer-lm")
    print(f"1/2 the shipped optimizer unf.lopt.pretrained('transformer-lm') ({made['meta_steps']} meta-steps, "
          f"{made['device']}, {made['date']}) against tuned AdamW + cosine on held-out transformers; the full ladder "
          "(widths to 256, Muon, 8 layers, 2,000 steps) is `python -m benchmarks.lopt_ladder` (docs/results.md)",
          flush=True)
    learned, meta_params = lopt.load_pretrained("transformer-lm")
    kind = made["kind"]
    rows = compare.compare(heldout, [compare.LearnedEntry(f"{kind} (shipped)", learned, meta_params)], seeds, tuning,
                           log=log, tuned=tuned)
    print(_write_comparison(rows, args.out / "shipped", f"Held-out transformers, final loss on held-out text, "
                            f"{len(seeds)} seeds; baselines {how}."), flush=True)

    print(f"2/2 how it is made: meta-training from scratch with the same recipe for {args.meta_steps} meta-steps on "
          f"its first task (the shipped one had {made['meta_steps']} on {len(made['tasks'])} tasks); "
          "`unf-meta-train --recipe transformer-lm` runs the full budget", flush=True)
    cfg = dataclasses.replace(recipe.config, steps=args.meta_steps, checkpoint_every=max(1, args.meta_steps // 4))
    command = f"unf-main --meta-steps {args.meta_steps}"
    # One task config: each config compiles its own meta-step, which dominates a demonstration this short.
    export = run_recipe("transformer-lm", kind, cfg, args.out / "meta-train", command, progress=not args.quiet,
                        num_tasks=1)
    own = shipped.load_npz(export / "meta_params.npz", jax.eval_shape(learned.init_meta_params, jax.random.key(0)))
    rows = compare.compare(heldout[:1], [compare.LearnedEntry(f"{kind} ({args.meta_steps} meta-steps)", learned, own),
                                         compare.LearnedEntry(f"{kind} (shipped)", learned, meta_params)],
                           seeds, tuning, log=log, tuned=tuned)
    print(_write_comparison(rows, args.out / "self-trained", f"The self-trained optimizer on {heldout[0].label}, "
                            f"{len(seeds)} seeds."), flush=True)
    print(f"results in {args.out} (shipped/, self-trained/: results.md, results.json, loss_curves.png; meta-train/: "
          "checkpoints, metrics.jsonl, export/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
