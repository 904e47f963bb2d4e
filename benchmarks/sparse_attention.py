"""Robust sparse attention against dense attention: time, peak memory, output error and LM loss.

1. Forward time and XLA's compiled peak-memory estimate of one causal attention call (q, k, v given) for
   ``jax.nn.dot_product_attention`` and hetnet's sparse attention, side by side at each length.
2. A causal byte LM trained with dense attention on the standard library's source; on its validation windows, the
   relative error of each layer's sparse attention output against dense on the same (trained) activations, and the
   model's loss with each attention swapped in. A second model trained from scratch with sparse attention gives the
   trained-sparse loss.
3. On the same activations, output error against the number of keys each query reads exactly: routing per query
   block (the default) against routing per query with smaller blocks, and an oracle that keeps each query's
   highest-scoring keys (the best any selection of that many exact keys can do, summaries aside).

    python -m benchmarks.sparse_attention             # N = 1k, 4k, 16k; LM at 1k context (CPU, a few minutes)
    python -m benchmarks.sparse_attention --large     # adds N = 32k, 64k and a longer LM run (GPU)
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from benchmarks import report, timing
from hetnet import Attention, Norm, data, embedding
from hetnet.attention import projections, softmax, sparse
from hetnet.config import AttentionConfig, TransformerConfig
from hetnet.models import Body, TransformerLM
from hetnet.train import make_train_step

SPARSE_OPTIONS = (("block", 64), ("top_k", 4), ("window", 1))
LM_OPTIONS = (("block", 32), ("top_k", 4), ("window", 1))
HEADS, HEAD_DIM = 2, 64
DENSE_CFG = AttentionConfig(d_model=HEADS * HEAD_DIM, num_heads=HEADS)


def attention_fns(n: int):
    sparse_cfg = dataclasses.replace(DENSE_CFG, variant="sparse", options=SPARSE_OPTIONS)
    dense = jax.jit(lambda q, k, v: softmax.attend(q, k, v, DENSE_CFG, None))
    sparse_fn = jax.jit(lambda q, k, v: sparse.attend(q, k, v, sparse_cfg, None))
    return dense, sparse_fn


def measure_length(n: int, repeats: int, dtype: str = "float32") -> dict:
    """Times and sizes one forward call of dense and sparse attention at length ``n``; dense runs the kernel that
    :func:`softmax.select_implementation` picks (cuDNN on a GPU in bfloat16)."""
    kq, kk, kv = jax.random.split(jax.random.key(n), 3)
    shape = (1, n, HEADS, HEAD_DIM)
    q, k, v = (jax.random.normal(key, shape).astype(dtype) for key in (kq, kk, kv))
    dense, sparse_fn = attention_fns(n)
    times = timing.time_interleaved(
        {"dense": lambda: dense(q, k, v), "sparse": lambda: sparse_fn(q, k, v)}, repeats=repeats, warmup=1
    )
    mem = {"dense": timing.compiled_memory_bytes(dense, q, k, v), "sparse": timing.compiled_memory_bytes(sparse_fn, q, k, v)}
    return {
        "n": n,
        "dtype": dtype,
        "dense_kernel": softmax.select_implementation(q, k, DENSE_CFG, None),
        "time_s": {name: t["median"] for name, t in times.items()},
        "memory_bytes": mem,
        "time_ratio": times["sparse"]["median"] / times["dense"]["median"],
        "memory_ratio": mem["sparse"] / mem["dense"],
    }


def train_lm(cfg: TransformerConfig, corpus, steps: int, batch: int, seed: int):
    params = TransformerLM(cfg).init(jax.random.key(seed))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(3e-3, steps)))
    step = make_train_step(lambda p, b: TransformerLM(cfg).loss(p, b), optimizer)
    opt_state = optimizer.init(params)
    tokens = jnp.asarray(corpus.train)
    sample = jax.jit(lambda key: data.sample_windows(key, tokens, batch, cfg.max_len + 1))
    key = jax.random.key(seed + 1)
    for _ in tqdm(range(steps), desc=f"train {cfg.attention}", leave=False):
        key, sub = jax.random.split(key)
        params, opt_state, metrics = step(params, opt_state, {"tokens": sample(sub)})
    return params


def dense_reference(params, tokens, cfg: TransformerConfig) -> list[tuple[jax.Array, jax.Array]]:
    """Returns, per block of a dense-attention model, its normed attention input on ``tokens`` and its output."""
    x = embedding.embed_tokens(params["tokens"], tokens, jnp.float32)
    states = jax.jit(Body(cfg).residual_states)(params, x)
    attend = jax.jit(Attention(cfg.attention_config).apply)
    pairs = []
    for i in range(cfg.num_layers):
        block = jax.tree.map(lambda a, i=i: a[i], params["blocks"])
        h = Norm(cfg.norm_config).apply(block["attn_norm"], states[i])
        pairs.append((h, attend(block["attn"], h)))
    return pairs


def relative_output_errors(params, reference, sparse_cfg: TransformerConfig) -> list[float]:
    """Returns per block the relative error of sparse attention on the inputs of :func:`dense_reference`."""
    attend = jax.jit(Attention(sparse_cfg.attention_config).apply)
    errors = []
    for i, (h, want) in enumerate(reference):
        got = attend(jax.tree.map(lambda a, i=i: a[i], params["blocks"]["attn"]), h)
        errors.append(float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want)))
    return errors


def oracle_output(attn, h: jax.Array, keys: int) -> jax.Array:
    """Returns causal attention that keeps, for each query and head, only its ``keys`` highest-scoring keys.

    attn: a layer's projection params; h: [batch, seq, d_model] -> [batch, seq, d_model]. Dense-sized: for study only.
    """
    q, k, v = projections.project_qkv(attn, h)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    n = logits.shape[-1]
    logits = jnp.where(jnp.tril(jnp.ones((n, n), bool)), logits, -jnp.inf)
    kth = jnp.sort(logits, axis=-1)[..., -min(keys, n)][..., None]
    p = jax.nn.softmax(jnp.where(logits >= kth, logits, -jnp.inf), axis=-1)
    return projections.project_out(attn, jnp.einsum("bhqk,bkhd->bqhd", p, v))


def routing_curves(params, reference, sparse_cfg: TransformerConfig) -> dict[str, list[dict]]:
    """Returns error-vs-keys-read curves: block routing (block 32), per-query routing (block 8), and the oracle."""
    curves: dict[str, list[dict]] = {"block routing (block 32)": [], "per-query routing (block 8)": [], "oracle": []}
    settings = [("block routing (block 32)", 32, 32, k) for k in (1, 2, 6, 14)]
    settings += [("per-query routing (block 8)", 8, 1, k) for k in (5, 13, 29, 61)]
    for name, block, group, top_k in settings:
        cfg = dataclasses.replace(sparse_cfg, attention_options=(
            ("block", block), ("top_k", top_k), ("window", 1), ("query_group", group), ("summary", "mean")))
        curves[name].append({"keys": (top_k + 3) * block, "top_k": top_k,
                             "errors": relative_output_errors(params, reference, cfg)})
    run = jax.jit(oracle_output, static_argnums=2)
    for keys in (64, 128, 256, 512):
        errors = []
        for i, (h, want) in enumerate(reference):
            got = run(jax.tree.map(lambda a, i=i: a[i], params["blocks"]["attn"]), h, keys)
            errors.append(float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want)))
        curves["oracle"].append({"keys": keys, "errors": errors})
    return curves


def lm_study(context: int, steps: int, batch: int, eval_batches: int) -> dict:
    corpus = data.stdlib_corpus(max_bytes=2_000_000)
    dense_cfg = TransformerConfig(vocab_size=256, d_model=64, num_heads=4, num_layers=2, max_len=context)
    sparse_cfg = dataclasses.replace(dense_cfg, attention="sparse", attention_options=LM_OPTIONS)
    valid = jnp.asarray(corpus.valid)
    windows = [data.sample_windows(jax.random.key(1000 + i), valid, batch, context + 1) for i in range(eval_batches)]
    loss = {c: jax.jit(lambda p, b, c=c: TransformerLM(c).loss(p, b)) for c in (dense_cfg, sparse_cfg)}

    def mean_loss(params, cfg):
        return float(np.mean([loss[cfg](params, {"tokens": w}) for w in windows]))

    dense_params = train_lm(dense_cfg, corpus, steps, batch, seed=0)
    sparse_params = train_lm(sparse_cfg, corpus, steps, batch, seed=0)
    reference = dense_reference(dense_params, windows[0][:, :-1], dense_cfg)
    errors = relative_output_errors(dense_params, reference, sparse_cfg)
    options = dict(LM_OPTIONS)
    sweep = []
    for top_k in (1, 2, 4, 8, 16):
        for summary in ("mean", "none"):
            swept = dataclasses.replace(sparse_cfg, attention_options=tuple(
                {**options, "top_k": top_k, "summary": summary}.items()))
            layer_errors = relative_output_errors(dense_params, reference, swept)
            exact = min(context, (top_k + options["window"] + 2) * options["block"])
            sweep.append({"top_k": top_k, "summary": summary, "exact_keys_at_most": exact,
                          "errors": layer_errors})
    losses = {
        "dense-trained, dense": mean_loss(dense_params, dense_cfg),
        "dense-trained, sparse swapped in": mean_loss(dense_params, sparse_cfg),
        "sparse-trained, sparse": mean_loss(sparse_params, sparse_cfg),
    }
    return {"context": context, "steps": steps, "batch": batch, "options": dict(LM_OPTIONS),
            "relative_output_error_per_layer": errors, "valid_loss": losses, "error_sweep": sweep,
            "routing_curves": routing_curves(dense_params, reference, sparse_cfg)}


def plot(lengths: list[dict], lm: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    ns = [r["n"] for r in lengths]
    for name in ("dense", "sparse"):
        axes[0].plot(ns, [r["time_s"][name] * 1e3 for r in lengths], "o-", label=name)
        axes[1].plot(ns, [r["memory_bytes"][name] / 2**20 for r in lengths], "o-", label=name)
    for ax, label in ((axes[0], "forward time (ms)"), (axes[1], "peak memory (MiB, XLA estimate)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.legend()
    names = list(lm["valid_loss"])
    axes[2].bar(range(len(names)), [lm["valid_loss"][n] for n in names], color=["C0", "C1", "C2"])
    axes[2].set_xticks(range(len(names)), [n.replace(", ", ",\n") for n in names], fontsize=8)
    axes[2].set_ylabel("validation loss (nats/byte)")
    low = min(lm["valid_loss"].values())
    axes[2].set_ylim(low * 0.95, max(lm["valid_loss"].values()) * 1.02)
    for (name, curve), color in zip(lm["routing_curves"].items(), ("C0", "C1", "k")):
        for layer in range(len(curve[0]["errors"])):
            axes[3].plot([c["keys"] for c in curve], [c["errors"][layer] for c in curve], "o-" if layer else "s--",
                         color=color, label=f"{name}, layer {layer}")
    axes[3].axhline(0.05, color="grey", lw=0.8)
    axes[3].axvline(lm["context"] / 8, color="grey", lw=0.8, ls=":")
    axes[3].set(xscale="log", yscale="log", xlabel="exact keys read per query (at most)",
                ylabel="relative output error")
    axes[3].legend(fontsize=6)
    fig.suptitle(f"sparse vs dense causal attention ({HEADS} heads x {HEAD_DIM}; options {dict(SPARSE_OPTIONS)})")
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "add N = 32k, 64k and train the LM longer (GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    ns = [1024, 4096, 16384] + ([32768, 65536] if args.large else [])
    dtype = "bfloat16" if args.large else "float32"
    lengths = []
    for n in ns:
        lengths.append(measure_length(n, args.repeats, dtype))
        r = lengths[-1]
        print(f"N={n}: time ratio {r['time_ratio']:.3f}, memory ratio {r['memory_ratio']:.4f}", flush=True)
    lm = lm_study(context=1024, steps=1500 if args.large else 250, batch=4, eval_batches=4)
    print("LM:", lm["valid_loss"], "errors", lm["relative_output_error_per_layer"], flush=True)

    rows = [[r["n"], r["time_s"]["dense"] * 1e3, r["time_s"]["sparse"] * 1e3, r["time_ratio"],
             r["memory_bytes"]["dense"] / 2**20, r["memory_bytes"]["sparse"] / 2**20, r["memory_ratio"]]
            for r in lengths]
    table = report.markdown_table(
        ["N", "dense ms", "sparse ms", "time ratio", "dense MiB", "sparse MiB", "memory ratio"], rows
    )
    table += (f"\nForward pass of one causal attention call in {dtype}, batch 1, {HEADS} heads of {HEAD_DIM}, dense by "
              f"{lengths[0]['dense_kernel']}'s kernel; sparse options "
              f"{dict(SPARSE_OPTIONS)}. Ratios are sparse / dense (targets at N = 16k: memory <= 0.125, time < 1). "
              "Memory is XLA's compiled estimate (arguments + outputs + temporaries).\n\n")
    dense_loss = lm["valid_loss"]["dense-trained, dense"]
    table += report.markdown_table(
        ["byte LM (context %d, %d steps)" % (lm["context"], lm["steps"]), "validation loss", "vs dense"],
        [[name, value, f"{100 * (value / dense_loss - 1):+.2f}%"] for name, value in lm["valid_loss"].items()],
    )
    errors = ", ".join(f"{e:.4f}" for e in lm["relative_output_error_per_layer"])
    table += (f"\nRelative output error of sparse attention against dense on the dense-trained model's activations, "
              f"per layer: {errors} (target < 5e-2). LM sparse options {dict(LM_OPTIONS)}; targets: loss within 2% "
              "of dense.\n")
    table += "\n" + report.markdown_table(
        ["top_k", "summary", "exact keys per query (at most)", "relative output error per layer"],
        [[r["top_k"], r["summary"], r["exact_keys_at_most"], ", ".join(f"{e:.4f}" for e in r["errors"])]
         for r in lm["error_sweep"]],
    )
    table += (f"\nThe same dense-trained model's activations (context {lm['context']}, "
              f"{lm['context'] // dict(LM_OPTIONS)['block']} blocks) under other top_k, with and without the summary "
              "of unselected blocks.\n")
    curve_rows = [[name, c["keys"], c.get("top_k", "-"), ", ".join(f"{e:.4f}" for e in c["errors"])]
                  for name, curve in lm["routing_curves"].items() for c in curve]
    table += "\n" + report.markdown_table(
        ["selection", "exact keys per query (at most)", "top_k", "relative output error per layer"], curve_rows)
    table += (f"\nRouting granularity on the same activations (context {lm['context']}; 1/8 of the keys is "
              f"{lm['context'] // 8}). Routed rows keep the mean summary of unselected blocks and window 1; the "
              "oracle keeps each query's highest-scoring keys and nothing else.\n")
    command = "python -m benchmarks.sparse_attention" + (" --large" if args.large else "")
    payload = {"device": timing.device_description(), "command": command, "lengths": lengths, "lm": lm,
               "options": dict(SPARSE_OPTIONS)}
    name = "sparse_attention_large" if args.large else "sparse_attention"
    report.publish(name, payload, table, plot(lengths, lm), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
