"""Time to the first optimizer step, as a new user meets it: a fresh interpreter, the model's params in hand, then
one eager ``init`` and ``update`` of ``optax.adam`` against the shipped learned optimizer (and the fresh equivariant
rule), and the first eager ``TransformerLM.init``. Target: the shipped optimizer's first eager update <= 3x Adam's.

    python -m benchmarks.first_step [--large]

Each measurement runs in its own interpreter, so every compilation is paid as a user pays it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from benchmarks import report, timing

_SNIPPET = textwrap.dedent("""
    import json, sys, time
    import jax, optax
    from hetnet import TransformerConfig, TransformerLM
    from unf import lopt, spec as spec_lib
    d_model, layers, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    cfg = TransformerConfig(vocab_size=256, d_model=d_model, num_heads=4, num_layers=layers, max_len=64)
    model = TransformerLM(cfg)
    start = time.perf_counter()
    params = model.init(jax.random.key(0))
    jax.block_until_ready(params)
    init_model_s = time.perf_counter() - start
    grads = jax.tree.map(lambda p: 0.01 * jax.numpy.ones_like(p), params)
    if which == "adam":
        tx = optax.adam(1e-3)
    elif which == "shipped":
        tx = lopt.pretrained("transformer-lm", total_steps=1000)
    else:
        spec = spec_lib.from_hetnet(jax.eval_shape(model.init, jax.random.key(0)), model.axes, io_as_groups=True)
        tx = lopt.equivariant_adam(spec, layer_key="blocks")
    start = time.perf_counter()
    state = tx.init(params)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - start
    start = time.perf_counter()
    updates, state = tx.update(grads, state, params)
    jax.block_until_ready(updates)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    updates, state = tx.update(grads, state, params)
    jax.block_until_ready(updates)
    second_s = time.perf_counter() - start
    print(json.dumps({"init_model_s": init_model_s, "init_s": init_s, "first_update_s": first_s,
                      "second_update_s": second_s}))
""")

OPTIMIZERS = ("adam", "shipped", "fresh-equivariant")


def measure(d_model: int, layers: int, which: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SNIPPET, str(d_model), str(layers), which], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    args = report.argument_parser(__doc__, "a d256, 6-layer model").parse_args(argv)
    d_model, layers = (256, 6) if args.large else (64, 3)
    results = {}
    for which in OPTIMIZERS:
        results[which] = measure(d_model, layers, which)
        print(which, results[which], flush=True)
    adam = results["adam"]["first_update_s"]
    rows = [[w, r["init_model_s"], r["init_s"], r["first_update_s"], r["second_update_s"], r["first_update_s"] / adam]
            for w, r in results.items()]
    ratio = results["shipped"]["first_update_s"] / adam
    table = report.markdown_table(["optimizer", "model init s", "optimizer init s", "first update s",
                                   "second update s", "first update / Adam's"], rows)
    table += (f"\nFirst eager update of the shipped optimizer / optax.adam's: {ratio:.2f}x (target <= 3x). "
              f"TransformerLM d_model {d_model}, {layers} layers, each optimizer in a fresh interpreter.\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.bar(list(results), [r["first_update_s"] for r in results.values()], color=["C0", "C1", "C2"])
    ax.axhline(3 * adam, color="k", ls="--", lw=1, label="3x Adam (target)")
    ax.set(ylabel="first eager update (s)", title=f"d_model {d_model}, {layers} layers")
    ax.legend()
    fig.tight_layout()
    payload = {"device": timing.device_description(), "command": "python -m benchmarks.first_step"
               + (" --large" if args.large else ""), "d_model": d_model, "layers": layers, "results": results,
               "shipped_over_adam_first_update": ratio}
    report.write("first_step", payload, table, fig, args.out)
    return payload


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
