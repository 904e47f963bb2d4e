"""The shipped learned optimizer's training-step time beside Adam's and Muon's, on byte-level TransformerLMs.

Each size's three steps (one jitted training step each: forward, backward and the optimizer's update, the same batch
and params) are timed interleaved in one run, so drift hits all alike; reported as ratios, with the medians. Beside
them, counted from the shapes, the FLOPs of the Newton-Schulz iterations that Muon and the learned optimizer run on
every hidden matrix over the FLOPs of the forward and backward pass: where that ratio is large, the step is bound by
arithmetic that no fusing removes.

    python -m benchmarks.lopt_step_cost            # d_model 64, two layers, 128 and 2,048 tokens a batch
    python -m benchmarks.lopt_step_cost --large    # also the GPT-2-small shape (d768, 12 layers) at 2,048 and 8,192
"""

from __future__ import annotations

import math
import sys

import optax

from benchmarks import report, timing
from unf import baselines, recipes
from unf.lopt import orthogonal, shipped, width
from unf.tasks import transformer_lm

# (d_model, layers, heads, seq, batch)
SIZES = ((64, 2, 4, 64, 2), (64, 2, 4, 64, 32))
LARGE_SIZES = SIZES + ((768, 12, 12, 128, 16), (768, 12, 12, 128, 64))


def step_flops(task, seq: int, tokens: int) -> dict:
    """Returns the training step's FLOPs by part, counted from ``task``'s spec: ``train``, the forward and backward
    pass, estimated as 6 x (weights used in products: hidden and readout matrices) x tokens plus attention's
    12 x layers x seq x d_model x tokens (scores and weighted values, the causal mask's saving not taken, as
    :func:`benchmarks.transformer_step.model_flops_per_step` counts); ``orthogonalize``, the Newton-Schulz
    iterations on every hidden matrix (:func:`unf.lopt.orthogonal.orthogonalize_flops`)."""
    spec = task.spec
    matmul_weights, ortho = 0, 0
    whole = width.matrix_views(spec, [False] * spec.num_leaves)  # the stacking axis counts the matrices
    for shape, (role, _), axes in zip(spec.leaf_shapes, width.roles(spec, width.stacked_by_labels(spec)), whole):
        if width.ROLES[role] in ("hidden", "output"):
            matmul_weights += math.prod(shape)
        if axes is not None:
            ortho += orthogonal.orthogonalize_flops(shape, axes)
    sizes = dict(spec.sizes)
    attention = 12 * sizes.get("layers", 1) * seq * sizes["embed"] * tokens
    return {"train": 6 * matmul_weights * tokens + attention, "orthogonalize": ortho}


def step_costs(learned, meta_params, sizes=SIZES, repeats: int = 20) -> list[dict]:
    """Returns, per size ``(d_model, layers, heads, seq, batch)``, the median step times of Adam, Muon (the ladder's
    setup) and the learned optimizer and the learned one's ratios to both."""
    rows = []
    for d_model, layers, heads, seq, batch in sizes:
        task = transformer_lm(d_model=d_model, layers=layers, heads=heads, seq=seq, batch=batch)
        opt = learned.opt_fn(meta_params, total_steps=1000)
        muon = baselines.muon(task.spec, 1000)([1e-3, 0.1])
        times = timing.optimizer_step_times(task, {"adam": optax.adam(1e-3), "muon": muon, "learned": opt},
                                            repeats=repeats)
        median = {name: t["median"] for name, t in times.items()}
        flops = step_flops(task, seq, batch * seq)
        rows.append({"d_model": d_model, "layers": layers, "tokens": batch * seq, "adam_seconds": median["adam"],
                     "muon_seconds": median["muon"], "learned_seconds": median["learned"],
                     "over_adam": median["learned"] / median["adam"], "over_muon": median["learned"] / median["muon"],
                     "train_flops": flops["train"], "orthogonalize_flops": flops["orthogonalize"],
                     "orthogonalize_over_train": flops["orthogonalize"] / flops["train"]})
        print(f"d_model {d_model}, {layers} layers, {batch * seq} tokens: {rows[-1]['over_adam']:.2f}x Adam, "
              f"{rows[-1]['over_muon']:.2f}x Muon", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    return report.markdown_table(
        ["d_model", "layers", "tokens a batch", "Adam step (s)", "Muon step (s)", "learned step (s)", "learned / Adam",
         "learned / Muon", "Newton-Schulz FLOPs / forward+backward"],
        [[r["d_model"], r["layers"], r["tokens"], r["adam_seconds"], r["muon_seconds"], r["learned_seconds"],
          r["over_adam"], r["over_muon"], r["orthogonalize_over_train"]] for r in rows])


def figure(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [f"d{r['d_model']}x{r['layers']}\n{r['tokens']} tok" for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["over_adam"] for r in rows], 0.4, label="learned / Adam")
    ax.bar([x + 0.2 for x in xs], [r["over_muon"] for r in rows], 0.4, label="learned / Muon")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("step time ratio")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "also the GPT-2-small shape (d768, 12 layers, 12 heads, sequence 128)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps of each optimizer per size")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be positive, got {args.repeats}")
    learned, meta_params, made = recipes.load_export(shipped.WEIGHTS / "transformer-lm")
    name = "lopt_step_cost_large" if args.large else "lopt_step_cost"
    command = "python -m benchmarks.lopt_step_cost" + (" --large" if args.large else "")
    rows = []
    for size in LARGE_SIZES if args.large else SIZES:
        rows += step_costs(learned, meta_params, (size,), args.repeats)
        # Published after every size, so a run cut short keeps the sizes it timed.
        payload = {"device": timing.device_description(), "command": command, "shipped": made, "rows": rows}
        report.publish(name, payload, table(rows), figure(rows), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
