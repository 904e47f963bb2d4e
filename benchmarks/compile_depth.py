"""Train-step compile time and step time against depth: the scanned stack of blocks against the same blocks unrolled
in a Python loop (the layout before stacking). Target: compile time at 24 layers <= 1.3x that at 2 layers, with step
time no worse than the unrolled loop's.

    python -m benchmarks.compile_depth [--large]
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import optax

from benchmarks import report, timing
from hetnet import Block, Norm, TransformerConfig, TransformerLM, embedding
from hetnet.train import make_train_step


def unrolled_loss(model: TransformerLM):
    """The model's loss with its blocks applied one by one in a Python loop (each block traced and compiled anew)."""
    cfg = model.cfg

    def loss(params, batch):
        tokens = batch["tokens"]
        x = model.embed(params, tokens[:, :-1])
        x = embedding.add_positions(params["positions"], x)
        for i in range(cfg.num_layers):
            x = Block(cfg).apply(jax.tree.map(lambda a, i=i: a[i], params["blocks"]), x)
        logits = Norm(cfg.norm_config).apply(params["final_norm"], x) @ params["unembed"]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]))

    return loss


def measure(cfg: TransformerConfig, batch: int, repeats: int) -> dict:
    model = TransformerLM(cfg)
    params = model.init(jax.random.key(0))
    optimizer = optax.adam(1e-3)
    state = optimizer.init(params)
    data = {"tokens": jax.random.randint(jax.random.key(1), (batch, cfg.max_len + 1), 0, cfg.vocab_size)}
    out, runs = {}, {}
    for name, loss in (("scan", model.loss), ("unrolled", unrolled_loss(model))):
        step = make_train_step(loss, optimizer, donate=False)
        start = time.perf_counter()
        compiled = step.lower(params, state, data).compile()
        out[f"{name}_compile_s"] = time.perf_counter() - start
        runs[name] = lambda compiled=compiled: compiled(params, state, data)
    times = timing.time_interleaved(runs, repeats=repeats)
    for name, t in times.items():
        out[f"{name}_step_ms"] = t["median"] * 1e3
    return out


def main(argv=None) -> dict:
    args = report.argument_parser(__doc__, "a wider model and longer sequences").parse_args(argv)
    d_model, seq, batch = (256, 256, 16) if args.large else (64, 64, 8)
    depths = (2, 6, 12, 24)
    rows, results = [], {}
    for depth in depths:
        cfg = TransformerConfig(vocab_size=256, d_model=d_model, num_heads=4, num_layers=depth, max_len=seq)
        r = measure(cfg, batch, repeats=30)
        results[depth] = r
        rows.append([depth, r["scan_compile_s"], r["unrolled_compile_s"], r["scan_step_ms"], r["unrolled_step_ms"]])
        print(f"depth {depth}: compile scan {r['scan_compile_s']:.2f}s unrolled {r['unrolled_compile_s']:.2f}s; "
              f"step scan {r['scan_step_ms']:.1f}ms unrolled {r['unrolled_step_ms']:.1f}ms", flush=True)
    ratio = results[24]["scan_compile_s"] / results[2]["scan_compile_s"]
    unrolled_ratio = results[24]["unrolled_compile_s"] / results[2]["unrolled_compile_s"]
    step_ratio = results[24]["scan_step_ms"] / results[24]["unrolled_step_ms"]
    table = report.markdown_table(
        ["layers", "compile s (scan)", "compile s (unrolled)", "step ms (scan)", "step ms (unrolled)"], rows)
    table += (f"\nCompile time 24 / 2 layers: scan {ratio:.2f}x (target <= 1.3x), unrolled {unrolled_ratio:.2f}x. "
              f"Step time at 24 layers, scan / unrolled: {step_ratio:.2f}x. d_model {d_model}, seq {seq}, "
              f"batch {batch}, Adam.\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name in ("scan", "unrolled"):
        a.plot(depths, [results[d][f"{name}_compile_s"] for d in depths], marker="o", label=name)
        b.plot(depths, [results[d][f"{name}_step_ms"] for d in depths], marker="o", label=name)
    a.set(xlabel="layers", ylabel="train-step compile time (s)")
    b.set(xlabel="layers", ylabel="train-step time (ms)")
    a.legend()
    fig.tight_layout()
    payload = {"device": timing.device_description(), "command": "python -m benchmarks.compile_depth"
               + (" --large" if args.large else ""), "results": results, "compile_ratio_24_over_2": ratio,
               "unrolled_compile_ratio_24_over_2": unrolled_ratio, "step_ratio_scan_over_unrolled_24": step_ratio}
    report.write("compile_depth", payload, table, fig, args.out)
    return payload


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
