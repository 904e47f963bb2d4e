"""Learned optimizers against tuned Adam on the four task families, and the UNF optimizer's per-step cost.

For each family: meta-train the UNF optimizer, the per-parameter MLP baseline and meta-tuned SGD with momentum with
one budget; tune Adam's learning rate by a sweep on the training config; train the held-out tasks (the training
width with fresh seeds, and one twice as wide) with every optimizer over several seeds. Then time one inner step of
each optimizer on the same task, interleaved, and report UNF/Adam.

    python -m benchmarks.lopt_paper_rule                      # the default CPU budget (stated in the output)
    python -m benchmarks.lopt_paper_rule --meta-steps 1000 --particles 16 --truncation 50 --horizon 2000 --eval-steps 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np
import optax

from benchmarks import report, timing
from unf import family_runs, lopt, tasks
from unf.meta import ESConfig, MetaTrainConfig


def step_time_ratio(task: tasks.Task, repeats: int) -> dict:
    """Returns per-step seconds of Adam, the per-parameter MLP and UNF on ``task`` and the ratios to Adam."""
    optimizers = {
        "adam": optax.adam(1e-3),
        "mlp": lopt.PerParameterMLP().opt_fn(lopt.PerParameterMLP().init_meta_params(jax.random.key(0))),
        "unf": lopt.UNFOptimizer(task.spec).opt_fn(lopt.UNFOptimizer(task.spec).init_meta_params(jax.random.key(0))),
    }
    times = timing.optimizer_step_times(task, optimizers, repeats)
    out = {f"{k}_s": v["median"] for k, v in times.items()}
    out.update({f"{k}_over_adam": times[k]["median"] / times["adam"]["median"] for k in ("mlp", "unf")})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="*", default=list(tasks.FAMILIES), choices=list(tasks.FAMILIES))
    p.add_argument("--meta-steps", type=int, default=60)
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--truncation", type=int, default=20)
    p.add_argument("--horizon", type=int, default=300)
    p.add_argument("--eval-steps", type=int, default=300)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--runs", type=Path, default=Path("runs/benchmark_lopt"))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    cfg = MetaTrainConfig(steps=args.meta_steps, checkpoint_every=10, es=ESConfig(estimator="pes",
        num_particles=args.particles, truncation=args.truncation, horizons=(args.horizon,)))
    budget = (f"{args.meta_steps} meta-steps x {args.particles} particles x truncation {args.truncation} "
              f"(horizon {args.horizon}); evaluation {args.eval_steps} inner steps x {args.seeds} seeds")
    results, tables = {}, []
    for fam in args.families:
        done = args.runs / fam / "eval" / "results.json"
        previous = json.loads(done.read_text()) if done.exists() else {}
        if previous.get("steps") == args.eval_steps and previous.get("seeds") == args.seeds:
            # A finished family of an interrupted run (same budget) is reused, not recomputed.
            print(f"[{fam}] reusing {done}", flush=True)
            table = previous["table"]
        else:
            contenders = []
            for name in ("unf", "per-parameter", "sgdm"):
                print(f"[{fam}] meta-training {name}: {budget}", flush=True)
                path = family_runs.run_meta_train(fam, name, cfg, args.runs / fam / name, progress=False)
                contenders.append(family_runs.load_contender(path))
            print(f"[{fam}] evaluating", flush=True)
            table = family_runs.run_eval(fam, contenders, args.eval_steps, args.seeds, args.runs / fam / "eval")
        rows = json.loads(done.read_text())
        speed = step_time_ratio(tasks.family(fam).train_tasks()[0], repeats=20)
        results[fam] = {"eval": rows, "step_time": speed}
        tables.append(f"### {fam}\n\n{table}\nPer inner step: Adam {speed['adam_s'] * 1e3:.2f} ms, "
                      f"per-parameter MLP x{speed['mlp_over_adam']:.2f}, UNF x{speed['unf_over_adam']:.2f} "
                      "(relative to Adam, same task, one run).\n")
        print(tables[-1], flush=True)
    summary = summarise(results)
    text = f"Budget: {budget}.\n\n{summary}\n" + "\n".join(tables)
    payload = {"device": timing.device_description(), "command": "python -m benchmarks.lopt_paper_rule " + " ".join(argv or sys.argv[1:]),
               "budget": budget, "results": {k: {"step_time": v["step_time"],
                                                  "eval": [{kk: vv for kk, vv in r.items() if kk != "curve"}
                                                           for r in v["eval"]["rows"]]} for k, v in results.items()}}
    paths = report.write("lopt_paper_rule", payload, text, plot(results), args.out)
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return 0


def summarise(results: dict) -> str:
    """Returns a table: per held-out task, the UNF final loss and whether it beats tuned Adam and the MLP baseline
    (difference larger than the sum of standard errors)."""
    lines = ["| task | UNF final | Adam final | MLP final | UNF beats Adam | UNF beats MLP | UNF/Adam step time |",
             "|---|---|---|---|---|---|---|"]
    for fam, res in results.items():
        rows = res["eval"]["rows"]
        for task in dict.fromkeys(r["task"] for r in rows):
            by = {r["optimizer"].split(" ")[0]: r for r in rows if r["task"] == task}
            u, a, m = by["unf"], by["adam"], by["per-parameter"]
            beats = lambda x, y: "yes" if x["final"] + x["final_se"] + y["final_se"] < y["final"] else "no"  # noqa: E731
            lines.append(f"| {task} | {u['final']:.4f} ± {u['final_se']:.4f} | {a['final']:.4f} ± {a['final_se']:.4f} "
                         f"| {m['final']:.4f} ± {m['final_se']:.4f} | {beats(u, a)} | {beats(u, m)} "
                         f"| {res['step_time']['unf_over_adam']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(fam, task) for fam, res in results.items()
              for task in dict.fromkeys(r["task"] for r in res["eval"]["rows"])]
    fig, axes = plt.subplots(2, (len(panels) + 1) // 2, figsize=(4.5 * ((len(panels) + 1) // 2), 7), squeeze=False)
    for ax, (fam, task) in zip(axes.T.ravel(), panels):
        for r in results[fam]["eval"]["rows"]:
            if r["task"] == task:
                curve = np.asarray(r["curve"])
                w = max(1, len(curve) // 40)
                ax.plot(np.convolve(curve, np.ones(w) / w, mode="valid"), label=r["optimizer"].split(" (")[0])
        ax.set_title(task, fontsize=7)
        ax.set_xlabel("inner step")
        ax.set_ylabel("train loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    sys.exit(main())
