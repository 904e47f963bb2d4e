"""The shipped learned optimizer against tuned AdamW + cosine on held-out transformers, and what meta-training costs.

1. Held-out comparison: the shipped ``transformer-lm`` optimizer (UNF correction on Adam) and its per-parameter
   baseline meta-trained with the same recipe and budget, against AdamW + warm-up + cosine (learning rate and warm-up
   tuned per task on a grid that grows until the best learning rate is interior) and tuned constant-lr Adam, on five
   held-out tasks (2x width, linear attention, 2x sequence, 2x depth, 4x horizon), several seeds.
2. Step time of one training step with each optimizer relative to Adam's, same task, interleaved in one run.
3. Meta-gradient variance of Noise-Reuse ES and Persistent ES on the same task, meta-params and population size.
4. Meta-training throughput (from the run's own log) and where a meta-step's time goes.

    python -m benchmarks.lopt --baseline runs/transformer-lm-mlp-adam/export --run runs/transformer-lm-unf-adam
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import report, timing
from unf import compare, lopt, recipes, tasks
from unf.lopt import learned_adam, shipped
from unf.meta import estimators, export

RECIPE = "transformer-lm"


def step_times(task, entries: dict, repeats: int) -> dict:
    """Returns per-step seconds of Adam and each learned optimizer on ``task`` and their ratios to Adam."""
    optimizers = {"adam": optax.adam(1e-3)}
    optimizers.update({name: e.learned.opt_fn(e.meta_params, total_steps=1000) for name, e in entries.items()})
    times = timing.optimizer_step_times(task, optimizers, repeats)
    return {name: {"seconds": t["median"], "over_adam": t["median"] / times["adam"]["median"]}
            for name, t in times.items()}


def cost_breakdown(task, learned, meta_params, repeats: int) -> dict:
    """Returns the step time, relative to an Adam step, of Adam plus each successive part of the learned rule: its
    input features, then its pointwise layers, then the whole rule (equivariant layer and update included)."""
    params = task.init(jax.random.key(0))
    batch = task.sample_batch(jax.random.key(1))
    adam = optax.adam(1e-3)
    full = learned.opt_fn(meta_params, total_steps=1000)

    def grads(p):
        return jax.grad(task.loss)(p, batch)

    def adam_plus(extra):
        def step(p, s):
            g = grads(p)
            u, s = adam.update(g, s, p)
            x = extra(p, g, s)
            # Each part's output feeds the update (times zero), so XLA cannot drop it as dead code.
            u = jax.tree.map(lambda a, b: a + 0.0 * jnp.sum(b), u, x) if x is not None else u
            return optax.apply_updates(p, u), s
        return step

    def features(p, g, s):
        return learned_adam.feats.features(p, g, (s[0].mu,) * 3, s[0].nu, jnp.int32(3), 1000)

    def hidden(p, g, s):
        return learned_adam.hidden_features(meta_params["hidden"], features(p, g, s), learned.sizes)

    def full_step(p, s):
        u, s = full.update(grads(p), s, p)
        return optax.apply_updates(p, u), s

    parts = {"adam": (adam_plus(lambda *a: None), adam.init(params)),
             "+ features": (adam_plus(features), adam.init(params)),
             "+ pointwise layers": (adam_plus(hidden), adam.init(params)),
             "whole rule": (full_step, full.init(params))}
    fns = {name: (lambda f=jax.jit(step), s=state: f(params, s)) for name, (step, state) in parts.items()}
    times = timing.time_interleaved(fns, repeats=repeats)
    return {name: t["median"] / times["adam"]["median"] for name, t in times.items()}


def estimator_variance(task, learned, meta_params, base: estimators.ESConfig, warmup: int, samples: int) -> dict:
    """Returns, per estimator, the variance of one meta-step's estimate (mean squared distance to the mean of
    ``samples`` consecutive estimates at fixed meta-params, after ``warmup`` steps into the staggered steady state)."""
    out = {}
    for name in ("nres", "pes"):
        cfg = dataclasses.replace(base, estimator=name)
        state = estimators.init_state(jax.random.key(0), task, learned, meta_params, cfg)
        step = jax.jit(lambda k, s, cfg=cfg: estimators.es_step(k, meta_params, s, task, learned, cfg))
        flat = []
        for i in range(warmup + samples):
            grad, state, _ = step(jax.random.key(1000 + i), state)
            if i >= warmup:
                flat.append(np.concatenate([np.ravel(x) for x in jax.tree.leaves(grad)]))
        g = np.stack(flat)
        mean = g.mean(axis=0)
        out[name] = {"variance": float(np.mean(np.sum((g - mean) ** 2, axis=1))),
                     "mean_norm": float(np.linalg.norm(mean)), "samples": samples}
    out["pes_over_nres"] = out["pes"]["variance"] / out["nres"]["variance"]
    return out


def throughput(run: Path, inner_step_s: float, cfg: estimators.ESConfig) -> dict:
    """Returns meta-steps/s from the run's ``metrics.jsonl`` (first 10% dropped: compilation) and the share of a
    meta-step spent in the inner training steps themselves (particles x truncation x one step's time)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    seconds = np.array([r["seconds"] for r in records[len(records) // 10:]])
    per_meta_step = float(np.median(seconds))
    inner = cfg.num_particles * cfg.truncation * inner_step_s
    return {"meta_steps": len(records), "meta_steps_per_s": float(len(seconds) / seconds.sum()),
            "median_meta_step_s": per_meta_step, "inner_steps_per_meta_step": cfg.num_particles * cfg.truncation,
            "inner_step_share": inner / per_meta_step, "hours": float(sum(r["seconds"] for r in records) / 3600)}


def main(argv=None) -> int:
    p = report.argument_parser(__doc__, "more seeds and tuning seeds")
    p.add_argument("--baseline", type=Path, required=True, help="export folder of the per-parameter baseline's run")
    p.add_argument("--run", type=Path, default=None, help="the shipped optimizer's run folder (for its throughput)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--tuning-seeds", type=int, default=4)
    args = p.parse_args(argv)
    recipe = recipes.recipe(RECIPE)
    shipped_learned, shipped_meta = lopt.load_pretrained(RECIPE)
    base_info = json.loads((args.baseline / "info.json").read_text())
    base_learned = recipe.learned(base_info["kind"])
    base_meta = export.load_npz(args.baseline / "meta_params.npz",
                                 jax.eval_shape(base_learned.init_meta_params, jax.random.key(0)))
    entries = {
        "unf-adam (shipped)": compare.LearnedEntry("unf-adam (shipped)", shipped_learned, shipped_meta),
        "mlp-adam (same recipe)": compare.LearnedEntry("mlp-adam (same recipe)", base_learned, base_meta),
    }
    seeds = list(range(args.seeds * (2 if args.large else 1)))
    tuning = list(range(100, 100 + args.tuning_seeds * (2 if args.large else 1)))
    rows = compare.compare(recipe.heldout(), list(entries.values()), seeds, tuning)
    task = recipe.train_tasks()[0]
    times = step_times(task, entries, repeats=30)
    large = tasks.transformer_lm(d_model=64, layers=2, heads=4, seq=64, batch=32)
    times_large = step_times(large, entries, repeats=10)
    print("step times", times, times_large, flush=True)
    breakdown = cost_breakdown(task, shipped_learned, shipped_meta, repeats=30)
    print("cost breakdown", breakdown, flush=True)
    variance = estimator_variance(task, shipped_learned, shipped_meta, recipe.config.es, warmup=40, samples=40)
    print("variance", variance, flush=True)
    speed = throughput(args.run, times["unf-adam (shipped)"]["seconds"], recipe.config.es) if args.run else None

    heldout = sorted({r.task for r in rows})
    wins = sum(1 for r in rows if r.optimizer == "unf-adam (shipped)" and r.ratio_to_adamw <= 0.97)
    beats_mlp = sum(1 for t in heldout if next(r.final for r in rows if r.task == t and r.optimizer.startswith(
        "unf")) < next(r.final for r in rows if r.task == t and r.optimizer.startswith("mlp")))
    summary = [
        f"Shipped optimizer at <= 0.97x tuned AdamW's final loss on {wins} of {len(heldout)} held-out tasks "
        f"(target: 4 of 5); lower final loss than the per-parameter baseline on {beats_mlp} of {len(heldout)}.",
        f"Divergences of the shipped optimizer: "
        f"{sum(r.diverged for r in rows if r.optimizer.startswith('unf'))} runs.",
        "Step time relative to Adam, same run: on the meta-training task (128 tokens a batch) "
        + ", ".join(f"{k} {v['over_adam']:.2f}x" for k, v in times.items() if k != "adam")
        + f"; on {large.label} (2048 tokens a batch) "
        + ", ".join(f"{k} {v['over_adam']:.2f}x" for k, v in times_large.items() if k != "adam") + ".",
        "Where the rule's step time goes (each part's step time relative to Adam's, meta-training task): "
        + ", ".join(f"{k} {v:.2f}x" for k, v in breakdown.items()) + ".",
        f"Meta-gradient variance on the same task and meta-params (population {recipe.config.es.num_particles}, "
        f"truncation {recipe.config.es.truncation}): NRES {variance['nres']['variance']:.4g}, PES "
        f"{variance['pes']['variance']:.4g} (PES/NRES {variance['pes_over_nres']:.2f}).",
    ]
    if speed:
        summary.append(
            f"Meta-training: {speed['meta_steps']} meta-steps at {speed['meta_steps_per_s']:.2f} meta-steps/s "
            f"({speed['hours']:.2f} h). A meta-step runs {speed['inner_steps_per_meta_step']} inner steps (particles x "
            f"truncation) vmapped in {1e3 * speed['median_meta_step_s']:.0f} ms; one by one they would take "
            f"{100 * speed['inner_step_share']:.0f}% of that: "
            + ("the meta-step's time is the inner training itself (model and learned rule), batched."
               if speed["inner_step_share"] >= 0.8 else
               "the rest goes to the estimator's own work (noise, fresh runs, the estimate)."))
    table = "\n".join(f"- {s}" for s in summary) + "\n\n" + compare.markdown(rows)
    payload = {
        "device": timing.device_description(), "command": "python -m benchmarks.lopt " + " ".join(argv or sys.argv[1:]),
        "shipped": shipped.info(RECIPE), "baseline": base_info, "seeds": len(seeds), "tuning_seeds": len(tuning),
        "rows": [r.as_dict() for r in rows], "step_times": times, "step_times_large": {"task": large.label, **times_large}, "cost_breakdown": breakdown, "variance": variance, "throughput": speed,
    }
    report.publish("lopt", payload, table, compare.plot(rows), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
