"""The shipped learned optimizer on networks that are not transformers, given only their weight-space spec.

The ``transformer-lm`` rule was meta-trained on hetnet TransformerLMs, but it reads nothing of them except each
tensor's labels (no learned correction ships): a spec of any network tells it each tensor's muP role, width and
matrix view. Here it trains an MLP and a CNN on the embedded digits and a byte-level LSTM language model, as a user
would call it: ``unf.lopt.pretrained("transformer-lm", total_steps=T, spec=unf.spec.mlp(params))`` (or ``cnn``; the
LSTM task's spec labels its cell by :func:`unf.spec.rnn`), nothing tuned. The baselines are tuned as on
:mod:`benchmarks.lopt_ladder`'s rungs (AdamW + warm-up + cosine, constant Adam, Muon on the spec's hidden matrices
with AdamW elsewhere; each learning-rate grid extended until its best value is interior, on seeds never evaluated),
and every optimizer is scored by its final loss on held-out data (a fifth of the digits; held-out files of the
standard library).

    python -m benchmarks.lopt_networks                  # 500 steps, 3 seeds
    python -m benchmarks.lopt_networks --large          # networks twice as wide, 1,000 steps
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import lopt_ladder, report, timing
from unf import evaluate, lopt
from unf.lopt import shipped
from unf import spec as spec_lib
from unf.tasks import cnn_digits, lstm_lm, mlp_digits
from unf.tasks.base import Task


def _with_spec(task: Task, make_spec) -> Task:
    """The task with the spec a user writes for it: the network's input and output axes unpermuted."""
    return dataclasses.replace(task, spec=make_spec(jax.eval_shape(task.init, jax.random.key(0))))


def networks(large: bool, steps: int | None) -> list[lopt_ladder.Rung]:
    """Returns the networks, as ladder rungs of axis ``network``."""
    scale = 2 if large else 1
    steps = steps or (1000 if large else 500)
    return [
        lopt_ladder.Rung("network", "mlp", _with_spec(mlp_digits(width=256 * scale, depth=3), spec_lib.mlp), steps),
        lopt_ladder.Rung("network", "cnn", _with_spec(cnn_digits(channels=16 * scale), spec_lib.cnn), steps),
        lopt_ladder.Rung("network", "lstm", lstm_lm(hidden=128 * scale, embed=32 * scale, seq=32, batch=16), steps),
    ]


def learned_row(rung: lopt_ladder.Rung, seeds: list[int]) -> dict:
    """Returns the shipped optimizer's row on ``rung``, served through the task's spec."""
    opt = lopt.pretrained("transformer-lm", total_steps=rung.steps, spec=rung.task.spec)

    def make(_):
        return optax.with_extra_args_support(opt)

    train, valid = evaluate.train_valid_losses(rung.task, make, jnp.zeros(()), rung.steps, seeds,
                                               points=lopt_ladder.POINTS)
    times = timing.optimizer_step_times(rung.task, {"adam": optax.adam(1e-3), "learned": opt}, repeats=10)
    return {**lopt_ladder._stats(valid, train),
            "step_time_over_adam": times["learned"]["median"] / times["adam"]["median"]}


def figure(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(rows), figsize=(5 * (1 + len(rows)), 4))
    names = [r["rung"].split("=", 1)[1] for r in rows]
    x = np.arange(len(rows))
    for k, base in enumerate(("adamw+cosine", "adam", "muon")):
        axes[0].bar(x + (k - 1) * 0.27, [r[f"ratio_to_{base}"] for r in rows], 0.27, label=f"learned / tuned {base}")
    axes[0].axhline(1.0, color="gray", lw=0.8)
    axes[0].set_xticks(x, names)
    axes[0].set_ylabel("final validation loss ratio")
    axes[0].set_title("shipped transformer-lm rule, by spec")
    axes[0].legend(fontsize=8)
    for ax, r, name in zip(axes[1:], rows, names):
        for label, entry in [*r["baselines"].items(), ("learned (shipped)", r["learned"])]:
            curve = entry["valid_curve"]
            ax.plot(np.arange(1, len(curve) + 1) * r["steps"] / len(curve), curve, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
        ax.set_title(f"{name}: {r['task']}", fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "networks twice as wide, 1,000 steps")
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds per network")
    parser.add_argument("--tuning-seeds", type=int, default=1, help="seeds for tuning the baselines (never evaluated)")
    parser.add_argument("--steps", type=int, default=None, help="run length (default 500; 1,000 with --large)")
    parser.add_argument("--only", nargs="+", default=None, help="networks to run, by name (mlp, cnn, lstm)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.tuning_seeds < 1:
        parser.error("--seeds and --tuning-seeds must be positive")
    if args.steps is not None and (args.steps < lopt_ladder.POINTS or args.steps % lopt_ladder.POINTS):
        parser.error(f"--steps must be a positive multiple of {lopt_ladder.POINTS}, got {args.steps}")
    chosen = networks(args.large, args.steps)
    known = [r.value for r in chosen]
    if args.only and not set(args.only) <= set(known):
        parser.error(f"--only names {args.only}; the networks are {known}")
    chosen = [r for r in chosen if args.only is None or r.value in args.only]
    out = Path(args.out) if args.out else report.RESULTS
    name = "lopt_networks_large" if args.large else "lopt_networks"
    cache_path = out / f"{name}_baselines.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    seeds, tuning = list(range(args.seeds)), list(range(100, 100 + args.tuning_seeds))
    command = f"python -m benchmarks.lopt_networks {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()
    rows = []
    for rung in chosen:
        print(f"[{rung.label}] {rung.task.label}, {rung.steps} steps", flush=True)
        base = lopt_ladder.tuned_baselines(rung, seeds, tuning, cache)
        out.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1, default=float) + "\n")
        rows.append(lopt_ladder.summarise(rung, base, learned_row(rung, seeds)))
        payload = {"device": timing.device_description(), "command": command, "shipped": shipped.info("transformer-lm"),
                   "seeds": seeds, "tuning_seeds": tuning, "rows": rows}
        # Published after every network, so a run cut short keeps the ones it finished.
        fig = figure(rows)
        paths = report.write(name, payload, lopt_ladder.table(rows), fig, out)
        fig.clf()
    print(paths["md"].read_text())
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
