"""Console scripts: ``unf-meta-train``, ``unf-eval``, ``unf-main`` (the project's main job) and ``unf`` (the three as
subcommands)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import jax

from hetnet import distributed
from unf import compare, family_runs, lopt, recipe_runs, recipes, tasks
from unf.lopt import shipped
from unf.meta import ESConfig, MetaTrainConfig, export

def _add_distributed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-process run found by jax.distributed's cluster detection (SLURM, MPI, TPU "
                   "pods); runs started by python -m hetnet.launch join without it")


def _task_config(args) -> MetaTrainConfig:
    """The --task path's PES settings: the defaults below unless overridden."""
    def given(name, default):
        value = getattr(args, name)
        return default if value is None else value

    return MetaTrainConfig(
        steps=given("steps", 100), meta_lr=given("meta_lr", 3e-3), checkpoint_every=given("checkpoint_every", 10),
        seed=given("seed", 0),
        es=ESConfig(estimator="pes", num_particles=given("particles", 16), truncation=given("truncation", 50),
                    horizons=(given("horizon", 2000),), sigma=given("sigma", 0.01)),
    )


def _recipe_config(args, recipe: recipes.Recipe) -> MetaTrainConfig:
    cfg = recipe.config
    es = cfg.es
    es_over = {k: getattr(args, k) for k in ("estimator", "truncation", "sigma", "rescale", "progress_power")
               if getattr(args, k) is not None}
    if args.horizons is not None:
        es_over["horizons"] = tuple(args.horizons)
    if args.particles is not None:
        es_over["num_particles"] = args.particles
    over = {k: getattr(args, k) for k in ("steps", "meta_lr", "checkpoint_every", "seed") if getattr(args, k) is not None}
    return dataclasses.replace(cfg, es=dataclasses.replace(es, **es_over), **over)


def _mode_args(p: argparse.ArgumentParser, recipe_help: str, task_help: str) -> None:
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--recipe", choices=tuple(recipes.RECIPES), help=recipe_help)
    mode.add_argument("--task", choices=tuple(tasks.FAMILIES), help=task_help)


def _refuse_other_mode(p: argparse.ArgumentParser, args, names: tuple[str, ...], mode: str) -> None:
    given = [n for n in names if getattr(args, n) is not None]
    if given:
        p.error(f"--{given[0].replace('_', '-')} applies without --{mode}; with --{mode} leave it out")


def meta_train_main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="unf-meta-train", description="Meta-train a learned optimizer with ES, by a "
                                "named recipe (the one that made a shipped optimizer) or on a task family with "
                                "the paper's rules.")
    _mode_args(p, "meta-train the recipe's optimizer (writes RUN/export in the shipped format)",
               "meta-train a paper rule on this task family with PES (writes RUN/meta_params)")
    p.add_argument("--optimizer", default=None,
                   help=f"with --recipe one of {recipes.KINDS} (default unf-muon); with --task one of "
                   f"{family_runs.OPTIMIZERS} (default unf)")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics.jsonl and the result")
    p.add_argument("--quiet", action="store_true")
    _add_distributed_arg(p)
    p.add_argument("--estimator", choices=("nres", "pes"), default=None, help="with --recipe")
    for name, kind in (("steps", int), ("particles", int), ("truncation", int), ("sigma", float),
                       ("meta-lr", float), ("checkpoint-every", int), ("seed", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="override the default")
    p.add_argument("--rescale", type=float, default=None, help="with --recipe")
    p.add_argument("--progress-power", type=float, default=None,
                   help="with --recipe: how much the objective weights the end of each inner run over its start "
                   "(0: the mean loss over the run)")
    p.add_argument("--no-correction", dest="correction", action="store_false",
                   help="with --recipe: meta-train the equivariant kinds without their learned correction (the "
                   "base direction with the learned schedule, decay and width factors)")
    p.add_argument("--horizons", type=int, nargs="+", default=None, help="with --recipe: the inner run lengths")
    p.add_argument("--horizon", type=int, default=None, help="with --task: inner steps before a run restarts")
    args = p.parse_args(argv)
    kinds = recipes.KINDS if args.recipe else family_runs.OPTIMIZERS
    args.optimizer = args.optimizer or kinds[kinds.index("unf-muon") if args.recipe else 0]
    if args.optimizer not in kinds:
        p.error(f"--optimizer must be one of {kinds} with --{'recipe' if args.recipe else 'task'}, got "
                f"{args.optimizer!r}")
    if args.recipe:
        _refuse_other_mode(p, args, ("horizon",), "recipe")
    else:
        _refuse_other_mode(p, args, ("estimator", "rescale", "horizons", "progress_power"), "task")
        if not args.correction:
            p.error("--no-correction applies with --recipe; with --task leave it out")
    try:
        distributed.initialize(auto=args.distributed)
        for name in ("steps", "particles", "truncation", "checkpoint_every"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}.")
        if args.task:
            path = family_runs.run_meta_train(args.task, args.optimizer, _task_config(args), args.out,
                                              progress=not args.quiet)
            distributed.main_print(f"meta-params written to {path}")
            return 0
        cfg = _recipe_config(args, recipes.recipe(args.recipe))
        command = "unf-meta-train " + " ".join(argv)
        folder = recipe_runs.run_recipe(args.recipe, args.optimizer, cfg, args.out, command, progress=not args.quiet,
                            correction=args.correction)
    except (ValueError, FloatingPointError) as err:
        print(f"unf-meta-train: error: {err}", file=sys.stderr)
        return 2
    distributed.main_print(f"meta-params written to {folder} (meta_params.npz, info.json: the shipped format)")
    return 0


def load_export(path: Path) -> compare.LearnedEntry:
    """Returns the evaluation entry for a folder in the shipped format (``meta_params.npz`` + ``info.json``, as
    ``unf-meta-train --recipe`` writes under ``export/``)."""
    learned, meta, info = recipes.load_export(path)
    return compare.LearnedEntry(f"{info['kind']} ({info['meta_steps']} meta-steps)", learned, meta)


def eval_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="unf-eval", description="Train held-out tasks with learned optimizers against "
                                "tuned baselines: a recipe's held-out tasks (against tuned AdamW + cosine and tuned "
                                "constant Adam) or a task family's (against Adam tuned on its training config).")
    _mode_args(p, "evaluate on this recipe's held-out tasks", "evaluate on this task family's held-out tasks")
    p.add_argument("--meta-params", type=Path, nargs="*", default=[],
                   help="with --recipe: export folders of unf-meta-train --recipe; with --task: the meta_params "
                   "folders unf-meta-train --task writes")
    p.add_argument("--pretrained", action="store_true", help="with --recipe: also evaluate its shipped optimizer")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--tuning-seeds", type=int, default=None, help="with --recipe: seeds for tuning (default 3)")
    p.add_argument("--steps", type=int, default=None, help="with --task: inner training steps (default 500)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.task:
        _refuse_other_mode(p, args, ("tuning_seeds",), "task")
        if args.pretrained:
            p.error("--pretrained applies with --recipe; the task families have no shipped optimizer")
    else:
        _refuse_other_mode(p, args, ("steps",), "recipe")
    try:
        tuning_seeds = 3 if args.tuning_seeds is None else args.tuning_seeds
        if args.seeds < 1 or tuning_seeds < 1:
            raise ValueError(f"--seeds and --tuning-seeds must be positive, got {args.seeds} and {tuning_seeds}.")
        if args.task:
            if not args.meta_params:
                raise ValueError("give the --meta-params folders to evaluate.")
            contenders = [family_runs.load_contender(path) for path in args.meta_params]
            print(family_runs.run_eval(args.task, contenders, args.steps or 500, args.seeds, args.out))
            return 0
        entries = [load_export(path) for path in args.meta_params]
        if args.pretrained:
            learned, meta = lopt.load_pretrained(args.recipe)
            entries.append(compare.LearnedEntry(f"{shipped.info(args.recipe)['kind']} (shipped)", learned, meta))
        if not entries:
            raise ValueError("give --meta-params folders, --pretrained, or both.")
        recipe = recipes.recipe(args.recipe)
        rows = compare.compare(recipe.heldout(), entries, list(range(args.seeds)),
                               list(range(100, 100 + tuning_seeds)), tuned=shipped.tuned_baselines(args.recipe))
        print(_write_comparison(rows, args.out, f"Held-out tasks of the {args.recipe} recipe, {args.seeds} seeds; "
                                f"baselines tuned per task on {tuning_seeds} other seeds."))
    except (ValueError, FileNotFoundError) as err:
        print(f"unf-eval: error: {err}", file=sys.stderr)
        return 2
    return 0


def _write_comparison(rows: list, out: Path, header: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    table = header + "\n\n" + compare.markdown(rows)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"header": header, "rows": [r.as_dict() for r in rows]},
                                                 indent=1) + "\n")
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
    measured = shipped.ladder("transformer-lm")
    if measured is not None:
        table, figure = measured
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(figure, args.out / "ladder.png")
        print(f"Measured when it shipped, on the ladder of held-out transformers (figure: {args.out / 'ladder.png'}):"
              f"\n\n{table.split(chr(10), 1)[1].strip()}\n", flush=True)
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
    folder = recipe_runs.run_recipe("transformer-lm", kind, cfg, args.out / "meta-train", command, progress=not args.quiet,
                        num_tasks=1, correction=made.get("correction", True))
    own, _ = export.load_meta_params(folder, jax.eval_shape(learned.init_meta_params, jax.random.key(0)))
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


#: ``unf COMMAND ...``: each subcommand is the console script of the same name without the ``unf-`` prefix.
COMMANDS = {"main": (main, "the main job (unf-main)"),
            "meta-train": (meta_train_main, "meta-train a learned optimizer (unf-meta-train)"),
            "eval": (eval_main, "evaluate learned optimizers against tuned baselines (unf-eval)")}


def unf_main(argv=None) -> int:
    """``unf {main,meta-train,eval} ...``: one entry point over the three commands; ``unf COMMAND --help`` shows the
    command's own options."""
    p = argparse.ArgumentParser(prog="unf", description="Universal neural functionals and learned optimizers.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)  # --help goes on to the command's own parser
    args, rest = p.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    return COMMANDS[args.command][0](rest)
