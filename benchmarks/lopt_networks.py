"""The shipped learned optimizer on networks it was not meta-trained on, given only their weight-space spec.

The ``transformer-lm`` rule was meta-trained on hetnet TransformerLMs, but it reads nothing of them except each
tensor's labels (no learned correction ships): a spec of any network tells it each tensor's muP role, width and
matrix view. Here it trains an MLP and a CNN on the embedded digits and a byte-level LSTM language model, as a user
would call it: ``unf.lopt.pretrained("transformer-lm", total_steps=T, spec=unf.spec.mlp(params))`` (or ``cnn``, for
a CNN with a pooled head and one shaped like the Flax tutorial's, whose flattened head ``cnn`` marks as unpermuted
width axes; the LSTM task's spec labels its cell by :func:`unf.spec.rnn`; the residual CNN's, shaped like the Flax
imagenet example's ResNet, and that of a decoder written with Flax nnx layers (``nnx.MultiHeadAttention``, biases,
LayerNorm; no axis named) are read off their losses by :func:`unf.spec.infer`), nothing tuned. The baselines are
tuned as on :mod:`benchmarks.lopt_ladder`'s rungs (AdamW + warm-up + cosine, constant Adam, Muon on the spec's
hidden matrices with AdamW elsewhere; each learning-rate grid extended until its best value is interior, on seeds
never evaluated), and every optimizer is scored by its final loss on held-out data (a fifth of the digits; held-out
files of the standard library). Then the same rule is run as a user tuning one number would run it, its learned
schedule scaled by a factor tuned like the baselines' learning rates, and with the hidden matrices' steps and the
other tensors' scaled apart, which says whether a scale is all another architecture needs or the balance between the
roles is not.
A network ``--out`` already holds for the same meta-params and seeds is read back (``--rerun`` runs it again).

    python -m benchmarks.lopt_networks                  # 500 steps, 3 seeds
    python -m benchmarks.lopt_networks --large          # networks twice as wide, 1,000 steps
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import lopt_ladder, report, timing
from unf import baselines, evaluate, lopt
from unf.lopt import shipped
from unf import spec as spec_lib
from unf.tasks import cnn_digits, lstm_lm, mlp_digits, nnx_gpt_lm, resnet_digits


def networks(large: bool, steps: int | None) -> list[lopt_ladder.Rung]:
    """Returns the networks, as ladder rungs of axis ``network``."""
    scale = 2 if large else 1
    steps = steps or (1000 if large else 500)
    return [
        lopt_ladder.Rung("network", "mlp", mlp_digits(width=256 * scale, depth=3).with_spec(spec_lib.mlp), steps),
        lopt_ladder.Rung("network", "cnn", cnn_digits(channels=16 * scale).with_spec(spec_lib.cnn), steps),
        lopt_ladder.Rung("network", "cnn-flatten",
                         cnn_digits(channels=16 * scale, head="flatten").with_spec(spec_lib.cnn), steps),
        lopt_ladder.Rung("network", "resnet", resnet_digits(channels=16 * scale, blocks=2), steps),
        lopt_ladder.Rung("network", "lstm", lstm_lm(hidden=128 * scale, embed=32 * scale, seq=32, batch=16), steps),
        lopt_ladder.Rung("network", "nnx-gpt", nnx_gpt_lm(d_model=64 * scale, layers=2, heads=4, seq=64, batch=8),
                         steps),
    ]


# The scale of the learned schedule a user tunes, started around the schedule itself; ``baselines.tune`` extends it
# by sqrt(10) past an edge, as it does the baselines' learning rates.
SCALES = (10**-0.5, 1.0, 10**0.5)


def learned_row(rung: lopt_ladder.Rung, seeds: list[int], tuning_seeds: list[int], tuned: bool = True) -> dict:
    """Returns the shipped optimizer's row on ``rung``, served through the task's spec, as shipped and (``tuned``)
    with its learned schedule scaled by the factor tuned on ``tuning_seeds`` (``row["scaled"]``) and its hidden and
    other tensors' steps scaled apart (``row["by_role"]``): every part of the update, decoupled decay included, is
    proportional to the step size, so ``optax.chain(opt, optax.scale(k))`` is the schedule times ``k``."""
    opt = lopt.pretrained("transformer-lm", total_steps=rung.steps, spec=rung.task.spec)

    def make(hyper):
        return optax.with_extra_args_support(optax.chain(opt, optax.scale(hyper[0])))

    one = jnp.ones((1,), jnp.float32)
    train, valid = evaluate.train_valid_losses(rung.task, make, one, rung.steps, seeds, points=lopt_ladder.POINTS)
    times = timing.optimizer_step_times(rung.task, {"adam": optax.adam(1e-3), "learned": opt}, repeats=10)
    as_shipped = {**lopt_ladder._stats(valid, train), "step_time_over_adam": times["learned"]["median"]
                  / times["adam"]["median"]}
    if not tuned:
        return as_shipped
    print(f"  [{rung.label}] tuning the learned schedule's scale", flush=True)
    found = baselines.tune("learned-scaled", rung.task, make, rung.steps, tuning_seeds, SCALES, objective="valid")
    scaled_train, scaled_valid = evaluate.train_valid_losses(rung.task, make, jnp.asarray(found.hyper, jnp.float32),
                                                             rung.steps, seeds, points=lopt_ladder.POINTS)
    scaled = {**lopt_ladder._stats(scaled_valid, scaled_train), "hyper": list(found.hyper),
              "edge_free": found.edge_free, "grid": {str(k): v for k, v in found.scores.items()}}
    print(f"  [{rung.label}] scaling hidden matrices and the other tensors apart", flush=True)
    make_by_role, grid = by_role_grid(rung, opt, tuning_seeds)
    best = min(grid, key=grid.get)
    role_train, role_valid = evaluate.train_valid_losses(
        rung.task, make_by_role, jnp.asarray([float(x) for x in best.split(",")], jnp.float32), rung.steps, seeds,
        points=lopt_ladder.POINTS)
    by_role = {**lopt_ladder._stats(role_valid, role_train), "hyper": best, "grid": grid}
    return {**as_shipped, "scaled": scaled, "by_role": by_role}


# Scales of the hidden matrices' steps and, apart, of every other tensor's (input and output layers, biases).
HIDDEN_SCALES = (1.0, 10**0.5, 10.0)
OTHER_SCALES = (1.0, 10**0.5, 10.0, 10**1.5)


def by_role_grid(rung: lopt_ladder.Rung, opt, tuning_seeds: list[int]) -> tuple[Any, dict]:
    """Returns ``(make_opt, {"hidden,other": held-out loss on tuning_seeds})``: ``make_opt([hidden, other])`` is the
    shipped rule with its hidden matrices' steps and the other tensors' scaled apart, which says whether one global
    scale is all another network needs or the balance between the roles learned on transformers does not carry
    over."""
    hidden = lopt.role_mask(rung.task.spec, "hidden")

    def make(hyper):
        def scale(updates, params=None):
            del params
            return jax.tree.map(lambda u, h: u * jnp.where(h, hyper[0], hyper[1]), updates, hidden(updates))

        return optax.with_extra_args_support(optax.chain(opt, optax.stateless(scale)))

    grid = {}
    for kh in HIDDEN_SCALES:
        for ko in OTHER_SCALES:
            grid[f"{kh:.6g},{ko:.6g}"] = baselines._score(rung.task, make, (kh, ko), rung.steps, tuning_seeds, "valid")
    return make, grid


def _ratios(entry: dict, baselines: dict) -> list[str]:
    """Returns ``entry``'s final held-out loss over each baseline's, in the tables' column order (the baselines are
    tuned, and stored, in another); "-" for a baseline a run cut short never reached."""
    return [f"{entry['valid_final'] / baselines[n]['valid_final']:.3f}" if n in baselines else "-"
            for n in lopt_ladder.BASELINES]


def scaled_table(rows: list[dict]) -> str:
    """Returns the table of the shipped rule with its schedule's scale tuned, against the same tuned baselines."""
    headers = ["rung", "steps", "tuned scale", "learned, scale tuned", "/ AdamW", "/ Adam", "/ Muon", "diverged"]
    body = []
    for r in rows:
        s = r["learned"]["scaled"]
        k = f"{s['hyper'][0]:.3g}" + ("" if s["edge_free"] else "*")
        body.append([r["rung"], r["steps"], k, f"{s['valid_final']:.4f} ± {s['valid_se']:.4f}",
                     *_ratios(s, r["baselines"]),
                     f"{s['diverged']}/{s['seeds']}"])
    return report.markdown_table(headers, body)


def by_role_table(rows: list[dict]) -> str:
    """Returns the by-role grid's best point per network (tuned on the tuning seeds) and its held-out loss on the
    evaluation seeds against each tuned baseline."""
    headers = ["rung", "best (hidden, other) scale", "learned, roles scaled", "/ AdamW", "/ Adam", "/ Muon",
               "diverged"]
    body = []
    for r in rows:
        s = r["learned"]["by_role"]
        kh, ko = (float(x) for x in s["hyper"].split(","))
        edge = kh in (HIDDEN_SCALES[0], HIDDEN_SCALES[-1]) or ko in (OTHER_SCALES[0], OTHER_SCALES[-1])
        body.append([r["rung"], f"({kh:.3g}, {ko:.3g})" + ("*" if edge else ""),
                     f"{s['valid_final']:.4f} ± {s['valid_se']:.4f}",
                     *_ratios(s, r["baselines"]),
                     f"{s['diverged']}/{s['seeds']}"])
    return report.markdown_table(headers, body)


def _listed(values) -> str:
    return ", ".join(f"{x:.3g}" for x in values)


def figure(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, 1 + len(rows))
    grid_rows = -(-(1 + len(rows)) // columns)
    fig, grid = plt.subplots(grid_rows, columns, figsize=(5 * columns, 4 * grid_rows), squeeze=False)
    axes = grid.ravel()
    for ax in axes[1 + len(rows):]:
        ax.set_visible(False)
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
        # Baselines in one order, so each keeps its colour from panel to panel.
        entries = [*((n, r["baselines"][n]) for n in lopt_ladder.BASELINES if n in r["baselines"]),
                   ("learned (shipped)", r["learned"])]
        if "scaled" in r["learned"]:
            entries += [(f"learned, scale {r['learned']['scaled']['hyper'][0]:.3g}", r["learned"]["scaled"]),
                        ("learned, hidden and other scaled ({:.3g}, {:.3g})".format(
                            *(float(x) for x in r["learned"]["by_role"]["hyper"].split(","))),
                         r["learned"]["by_role"])]
        for label, entry in entries:
            curve = entry["valid_curve"]
            ax.plot(np.arange(1, len(curve) + 1) * r["steps"] / len(curve), curve, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
        ax.set_title(f"{name}: {r['task']}", fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def rule_row(rung: lopt_ladder.Rung, learned, meta_params, seeds: list[int]) -> dict:
    """Returns the row of ``learned`` (a rule without a correction) with ``meta_params`` on ``rung``, served
    through the task's spec as :func:`unf.lopt.pretrained` serves the shipped rule, nothing tuned."""
    opt = lopt.LabelRule(learned, rung.task.spec).opt_fn(meta_params, total_steps=rung.steps)
    train, valid = evaluate.train_valid_losses(rung.task, lambda _: opt, jnp.ones((1,), jnp.float32), rung.steps,
                                               seeds, points=lopt_ladder.POINTS)
    return lopt_ladder._stats(valid, train)


def export_table(rows: list[dict]) -> str:
    """Returns the table of an export's rule beside the shipped one, each against the same tuned baselines."""
    headers = ["rung", "steps", "shipped", "export", "export / shipped", "export / AdamW", "export / Adam",
               "export / Muon"]
    body = [[r["rung"], r["steps"], f"{r['shipped']['valid_final']:.4f} ± {r['shipped']['valid_se']:.4f}",
             f"{r['export']['valid_final']:.4f} ± {r['export']['valid_se']:.4f}",
             f"{r['export']['valid_final'] / r['shipped']['valid_final']:.3f}",
             *_ratios(r["export"], r["baselines"])] for r in rows]
    return report.markdown_table(headers, body)


def export_figure(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(rows))
    for k, (name, label) in enumerate((("shipped", "shipped transformer-lm"), ("export", "export"))):
        ax.bar(x + (k - 0.5) * 0.4, [r[name]["valid_final"] / r["baselines"]["muon"]["valid_final"] for r in rows],
               0.4, label=label)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(x, [r["rung"].split("=", 1)[1] for r in rows])
    ax.set_ylabel("final validation loss / tuned Muon")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "networks twice as wide, 1,000 steps")
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds per network")
    parser.add_argument("--tuning-seeds", type=int, default=1, help="seeds for tuning the baselines (never evaluated)")
    parser.add_argument("--steps", type=int, default=None, help="run length (default 500; 1,000 with --large)")
    parser.add_argument("--only", nargs="+", default=None,
                        help="networks to run, by name (mlp, cnn, cnn-flatten, resnet, lstm, nnx-gpt); the rows "
                             "--out holds for the others stay")
    parser.add_argument("--rerun", action="store_true",
                        help="run the selected networks again, not reading back those --out holds for these "
                             "meta-params (the others keep their rows)")
    parser.add_argument("--meta-params", type=Path, default=None, metavar="EXPORT",
                        help="evaluate the rule in this export folder (unf-meta-train --recipe ... --no-correction "
                             "writes RUN/export) beside the shipped one, as shipped (nothing tuned), against the "
                             "cached tuned baselines; writes NAME_export.{json,md,png}")
    parser.add_argument("--as-shipped", action="store_true",
                        help="the shipped rule alone, nothing of it tuned (no scale or per-role grid), so more "
                             "evaluation seeds stay affordable; writes NAME_as_shipped.{json,md,png} and shares the "
                             "baselines' tuning with the full table")
    args = parser.parse_args(argv)
    if args.as_shipped and args.meta_params is not None:
        parser.error("--as-shipped and --meta-params: pass one; an export is always evaluated as exported")
    if args.seeds < 1 or args.tuning_seeds < 1:
        parser.error("--seeds and --tuning-seeds must be positive")
    if args.steps is not None and (args.steps < lopt_ladder.POINTS or args.steps % lopt_ladder.POINTS):
        parser.error(f"--steps must be a positive multiple of {lopt_ladder.POINTS}, got {args.steps}")
    chosen = networks(args.large, args.steps)
    known = [r.value for r in chosen]
    if args.only and not set(args.only) <= set(known):
        parser.error(f"--only names {args.only}; the networks are {known}")
    out = Path(args.out) if args.out else report.RESULTS
    name = "lopt_networks_large" if args.large else "lopt_networks"
    cache_path = out / f"{name}_baselines.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    seeds, tuning = list(range(args.seeds)), list(range(100, 100 + args.tuning_seeds))
    command = f"python -m benchmarks.lopt_networks {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()
    digest = lopt_ladder.fingerprint(lopt.load_pretrained("transformer-lm")[1])
    # A network an earlier run finished for the same meta-params and seeds is read back, so a cut run loses nothing;
    # --rerun runs the selected networks again and keeps the others' rows.
    published = f"{name}_as_shipped" if args.as_shipped else name
    finished = lopt_ladder.finished_rungs(out / f"{published}.json", digest, seeds, tuning)
    if args.meta_params is not None:
        try:
            learned, meta_params, made = lopt_ladder.load_learned(args.meta_params)
            lopt.LabelRule(learned, chosen[0].task.spec)
        except (FileNotFoundError, ValueError) as err:
            parser.error(f"--meta-params: {err}")
        selected = [r for r in chosen if args.only is None or r.value in args.only]
        rows = []
        for rung in selected:
            print(f"[{rung.label}] {rung.task.label}, {rung.steps} steps", flush=True)
            base = lopt_ladder.tuned_baselines(rung, seeds, tuning, cache)
            cache_path.write_text(json.dumps(cache, indent=1, default=float) + "\n")
            earlier = finished.get((rung.label, rung.task.label, rung.steps))
            mine = earlier["learned"] if earlier is not None else learned_row(rung, seeds, tuning)
            shipped_row = {k: mine[k] for k in ("valid_final", "valid_se", "diverged", "valid_curve", "seeds")}
            rows.append({"rung": rung.label, "task": rung.task.label, "steps": rung.steps, "baselines": base,
                         "shipped": shipped_row, "export": rule_row(rung, learned, meta_params, seeds)})
            payload = {"device": timing.device_description(), "command": command, "export": made,
                       "meta_params_digest": lopt_ladder.fingerprint(meta_params), "seeds": seeds,
                       "tuning_seeds": tuning, "rows": rows}
            fig = export_figure(rows)
            paths = report.write(f"{name}_export", payload, export_table(rows), fig, out)
            fig.clf()
        print(paths["md"].read_text())
        return 0

    def publish(done: dict) -> dict:
        """Writes the table of every network in ``done`` (by network), in the networks' order."""
        rows = [done[r.value] for r in chosen if r.value in done]
        payload = {"device": timing.device_description(), "command": command, "shipped": shipped.info("transformer-lm"),
                   "meta_params_digest": digest, "seeds": seeds, "tuning_seeds": tuning, "rows": rows}
        fig = figure(rows)
        tables = "\n\n".join([lopt_ladder.table(rows)] if args.as_shipped else [
            lopt_ladder.table(rows),
            "With the learned schedule scaled by a factor tuned like the baselines' learning rates "
            "(`optax.chain(opt, optax.scale(k))`; * at the grid's edge):", scaled_table(rows),
            f"With the hidden matrices' steps scaled by one of {_listed(HIDDEN_SCALES)} and every other tensor's by "
            f"one of {_listed(OTHER_SCALES)}, the pair tuned like the baselines (* at the grid's edge):",
            by_role_table(rows)])
        written = report.write(published, payload, tables, fig, out)
        fig.clf()
        return written

    def finished_row(rung: lopt_ladder.Rung) -> dict | None:
        row = finished.get((rung.label, rung.task.label, rung.steps))
        return row if row is not None and (args.as_shipped or "by_role" in row["learned"]) else None

    selected = [r for r in chosen if args.only is None or r.value in args.only]
    # A network --only leaves out keeps the row an earlier run finished, so the table stays whole.
    done = {r.value: row for r in chosen if r not in selected and (row := finished_row(r)) is not None}
    for rung in selected:
        print(f"[{rung.label}] {rung.task.label}, {rung.steps} steps", flush=True)
        earlier = None if args.rerun else finished_row(rung)
        if earlier is not None:
            print(f"  [{rung.label}] read back from {out / f'{published}.json'}", flush=True)
            done[rung.value] = earlier
        else:
            base = lopt_ladder.tuned_baselines(rung, seeds, tuning, cache)
            out.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(cache, indent=1, default=float) + "\n")
            done[rung.value] = lopt_ladder.summarise(rung, base, learned_row(rung, seeds, tuning,
                                                                             tuned=not args.as_shipped))
        paths = publish(done)  # after every network, so a run cut short keeps the ones it finished
    print(paths["md"].read_text())
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
