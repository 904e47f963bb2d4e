"""Robust sparse attention against dense attention: time, peak memory, output error and LM loss.

1. Forward time and XLA's compiled peak-memory estimate of one causal attention call (q, k, v given) for
   ``jax.nn.dot_product_attention`` and hetnet's sparse attention, side by side at each length.
2. A causal byte LM trained with dense attention on the standard library's source; on its validation windows, the
   relative error of each layer's sparse attention output against dense on the same (trained) activations, and the
   model's loss with each attention swapped in. A second model trained from scratch with sparse attention gives the
   trained-sparse loss.
3. On the same activations, output error against the number of keys each query reads exactly: routing per query
   block (the default) against routing per query with smaller blocks, by mean keys and by a learned indexer distilled
   from the frozen dense model (``TransformerLM.aux_loss``); an oracle that routes each query to the blocks
   holding most of its dense attention (the best any router can do with the same summaries); and an oracle that
   keeps each query's highest-scoring keys and nothing else.

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
INDEXER_OPTIONS = (("router", "indexer"), ("index_dim", 16))
LM_OPTIONS = (("block", 32), ("top_k", 4), ("window", 1))
PER_QUERY_BLOCK = 8
HEADS, HEAD_DIM = 2, 64
DENSE_CFG = AttentionConfig(d_model=HEADS * HEAD_DIM, num_heads=HEADS)


def attention_fns():
    """Returns jitted dense, sparse and indexer-routed sparse attention: ``(q, k, v, index) -> out``."""
    sparse_cfg = dataclasses.replace(DENSE_CFG, variant="sparse", options=SPARSE_OPTIONS)
    indexed_cfg = dataclasses.replace(sparse_cfg, options=SPARSE_OPTIONS + INDEXER_OPTIONS)
    return {"dense": jax.jit(lambda q, k, v, index: softmax.attend(q, k, v, DENSE_CFG, None)),
            "sparse": jax.jit(lambda q, k, v, index: sparse.attend(q, k, v, sparse_cfg, None)),
            "sparse, indexer": jax.jit(lambda q, k, v, index: sparse.attend(q, k, v, indexed_cfg, None, index))}


def measure_length(n: int, repeats: int, dtype: str = "float32") -> dict:
    """Times and sizes one forward call of dense and sparse attention at length ``n``; dense runs the kernel that
    :func:`softmax.select_implementation` picks (cuDNN on a GPU in bfloat16)."""
    keys = jax.random.split(jax.random.key(n), 5)
    shape = (1, n, HEADS, HEAD_DIM)
    q, k, v = (jax.random.normal(key, shape).astype(dtype) for key in keys[:3])
    dim = dict(INDEXER_OPTIONS)["index_dim"]
    index = (jax.random.normal(keys[3], (1, n, HEADS, 2, dim)).astype(dtype),
             jax.random.normal(keys[4], (1, n, HEADS, dim)).astype(dtype))
    fns = attention_fns()
    times = timing.time_interleaved({name: (lambda f=f: f(q, k, v, index)) for name, f in fns.items()},
                                    repeats=repeats, warmup=1)
    mem = {name: timing.compiled_memory_bytes(f, q, k, v, index) for name, f in fns.items()}
    return {
        "n": n,
        "dtype": dtype,
        "dense_kernel": softmax.select_implementation(q, k, DENSE_CFG, None),
        "time_s": {name: t["median"] for name, t in times.items()},
        "memory_bytes": mem,
        "time_ratio": {name: times[name]["median"] / times["dense"]["median"] for name in fns if name != "dense"},
        "memory_ratio": {name: mem[name] / mem["dense"] for name in fns if name != "dense"},
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
    return layer_errors(jax.jit(Attention(sparse_cfg.attention_config).apply), params, reference)


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


def oracle_block_output(attn, h: jax.Array, block: int, top_k: int) -> jax.Array:
    """Returns causal sparse attention whose ``top_k`` routed blocks per query are those holding the most dense
    attention mass, with the layer's forced blocks (own, previous, first) and mean summaries of the other earlier
    blocks, as :mod:`hetnet.attention.sparse` with ``query_group=1``: what a perfect router would give.

    attn: a layer's projection params; h: [batch, seq, d_model] with seq a multiple of ``block`` -> same shape.
    Dense-sized: for study only.
    """
    q, k, v = projections.project_qkv(attn, h)
    b, n, heads, d = q.shape
    m = n // block
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    causal = jnp.tril(jnp.ones((n, n), bool))
    mass = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), -1).reshape(b, heads, n, m, block).sum(-1)
    own, blocks = jnp.arange(n)[:, None] // block, jnp.arange(m)[None, :]
    earlier = blocks < own
    forced = (blocks == own) | (blocks == own - 1) | (blocks == 0)
    routable = earlier & ~forced
    score = jnp.where(routable, mass, -1.0)
    kth = jnp.sort(score, -1)[..., -min(top_k, m)][..., None]
    chosen = ((score >= kth) & routable) | (forced & (blocks <= own))  # [b, heads, n, m]
    exact = jnp.where(jnp.repeat(chosen, block, axis=-1) & causal, logits, -jnp.inf)
    k_mean = k.reshape(b, m, block, heads, d).mean(2)
    v_mean = v.reshape(b, m, block, heads, -1).mean(2)
    summary = jnp.einsum("bqhd,bmhd->bhqm", q, k_mean) / np.sqrt(d) + np.log(block)
    summary = jnp.where(earlier & ~chosen, summary, -jnp.inf)
    p = jax.nn.softmax(jnp.concatenate([exact, summary], -1), -1)
    out = jnp.einsum("bhqk,bkhd->bqhd", p[..., :n], v) + jnp.einsum("bhqm,bmhd->bqhd", p[..., n:], v_mean)
    return projections.project_out(attn, out)


def distill_indexer(dense_params, cfg: TransformerConfig, corpus, steps: int, batch: int, seed: int):
    """Returns ``dense_params`` with indexers added to a copy and trained by ``TransformerLM.aux_loss`` on
    training windows (the rest frozen), and the loss curve."""
    model = TransformerLM(cfg)
    fresh = model.init(jax.random.key(seed))["blocks"]["attn"]
    index = {name: fresh[name] for name in sparse.INDEXER_AXES}

    def with_index(index):
        blocks = dense_params["blocks"]
        return {**dense_params, "blocks": {**blocks, "attn": {**blocks["attn"], **index}}}

    optimizer = optax.adam(optax.cosine_decay_schedule(3e-3, steps))
    tokens = jnp.asarray(corpus.train)

    @jax.jit
    def step(index, opt_state, key):
        windows = data.sample_windows(key, tokens, batch, cfg.max_len + 1)
        loss, grads = jax.value_and_grad(lambda i: model.aux_loss(with_index(i), {"tokens": windows}))(index)
        updates, opt_state = optimizer.update(grads, opt_state, index)
        return optax.apply_updates(index, updates), opt_state, loss

    opt_state, key, curve = optimizer.init(index), jax.random.key(seed + 1), []
    for _ in tqdm(range(steps), desc="distil indexer", leave=False):
        key, sub = jax.random.split(key)
        index, opt_state, loss = step(index, opt_state, sub)
        curve.append(float(loss))
    return with_index(index), curve


def layer_errors(fn, params, reference) -> list[float]:
    errors = []
    for i, (h, want) in enumerate(reference):
        got = fn(jax.tree.map(lambda a, i=i: a[i], params["blocks"]["attn"]), h)
        errors.append(float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want)))
    return errors


def routing_curves(params, indexed_params, reference, sparse_cfg: TransformerConfig) -> dict[str, list[dict]]:
    """Returns error-vs-keys-read curves: block routing (block 32); per-query routing (block 8) by mean keys, by the
    distilled indexer and by the dense-mass oracle; and the top-keys oracle."""
    b = PER_QUERY_BLOCK
    context = reference[0][0].shape[1]
    key_counts = [context * f // 32 for f in (2, 4, 8, 16)]  # 1/16, 1/8, 1/4 and 1/2 of the keys
    names = ("block routing (block 32)", f"per-query routing (block {b})", f"per-query indexer (block {b})",
             f"per-query oracle routing (block {b})", "oracle top keys, no summary")
    curves: dict[str, list[dict]] = {name: [] for name in names}
    per_query_top_k = [keys // b - 3 for keys in key_counts if keys // b > 3]
    settings = [(names[0], 32, 32, keys // 32 - 3, ()) for keys in key_counts if keys // 32 > 3]
    settings += [(names[1], b, 1, k, ()) for k in per_query_top_k]
    settings += [(names[2], b, 1, k, INDEXER_OPTIONS) for k in per_query_top_k]
    for name, block, group, top_k, extra in settings:
        cfg = dataclasses.replace(sparse_cfg, attention_options=(
            ("block", block), ("top_k", top_k), ("window", 1), ("query_group", group), ("summary", "mean")) + extra)
        curves[name].append({"keys": (top_k + 3) * block, "top_k": top_k,
                             "errors": relative_output_errors(indexed_params if extra else params, reference, cfg)})
    routed = jax.jit(oracle_block_output, static_argnums=(2, 3))
    for top_k in per_query_top_k:
        curves[names[3]].append({"keys": (top_k + 3) * b, "top_k": top_k,
                                 "errors": layer_errors(lambda a, h: routed(a, h, b, top_k), params, reference)})
    top_keys = jax.jit(oracle_output, static_argnums=2)
    for keys in key_counts:
        curves[names[4]].append({"keys": keys,
                                 "errors": layer_errors(lambda a, h: top_keys(a, h, keys), params, reference)})
    return curves


def lm_study(context: int, steps: int, batch: int, eval_batches: int, distill_steps: int) -> dict:
    """Trains the byte LMs at ``context`` and measures loss and output error of the sparse variants on them."""
    corpus = data.stdlib_corpus(max_bytes=2_000_000)
    dense_cfg = TransformerConfig(vocab_size=256, d_model=64, num_heads=4, num_layers=2, max_len=context)
    sparse_cfg = dataclasses.replace(dense_cfg, attention="sparse", attention_options=LM_OPTIONS)
    valid = jnp.asarray(corpus.valid)
    windows = [data.sample_windows(jax.random.key(1000 + i), valid, batch, context + 1) for i in range(eval_batches)]
    b = PER_QUERY_BLOCK
    indexed_cfg = dataclasses.replace(dense_cfg, attention="sparse", attention_options=(
        ("block", b), ("top_k", max(0, context // 8 // b - 3)), ("window", 1), ("query_group", 1)) + INDEXER_OPTIONS)
    loss = {c: jax.jit(lambda p, b, c=c: TransformerLM(c).loss(p, b)) for c in (dense_cfg, sparse_cfg, indexed_cfg)}

    def mean_loss(params, cfg):
        return float(np.mean([loss[cfg](params, {"tokens": w}) for w in windows]))

    dense_params = train_lm(dense_cfg, corpus, steps, batch, seed=0)
    sparse_params = train_lm(sparse_cfg, corpus, steps, batch, seed=0)
    indexed_params, distill_curve = distill_indexer(dense_params, indexed_cfg, corpus, distill_steps, batch, seed=0)
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
        "dense-trained, indexer swapped in (1/8 keys)": mean_loss(indexed_params, indexed_cfg),
    }
    return {"context": context, "steps": steps, "batch": batch, "options": dict(LM_OPTIONS),
            "relative_output_error_per_layer": errors, "valid_loss": losses, "error_sweep": sweep,
            "indexer": {"options": dataclasses.asdict(indexed_cfg.attention_options), "distill_steps": distill_steps,
                        "distill_loss": distill_curve},
            "routing_curves": routing_curves(dense_params, indexed_params, reference, sparse_cfg)}


def lm_tables(lm: dict) -> str:
    """Returns the markdown tables of one :func:`lm_study`."""
    dense_loss = lm["valid_loss"]["dense-trained, dense"]
    table = report.markdown_table(
        ["byte LM (context %d, %d steps, batch %d)" % (lm["context"], lm["steps"], lm["batch"]), "validation loss",
         "vs dense"],
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
    table += (f"\nRouting on the same activations (context {lm['context']}; 1/8 of the keys is {lm['context'] // 8}). "
              "Routed rows keep the mean summary of unselected blocks and window 1. The indexer "
              f"({dict(INDEXER_OPTIONS)}) was distilled from the frozen dense model for "
              f"{lm['indexer']['distill_steps']} steps (indexer loss {lm['indexer']['distill_loss'][0]:.3f} -> "
              f"{np.mean(lm['indexer']['distill_loss'][-20:]):.3f}); oracle routing sends each query to the blocks "
              "holding most of its dense attention, the floor for any router with these summaries; the top-keys "
              "oracle keeps each query's highest-scoring keys and nothing else.\n")
    return table


def plot(lengths: list[dict], studies: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    ns = [r["n"] for r in lengths]
    for name in lengths[0]["time_s"]:
        axes[0].plot(ns, [r["time_s"][name] * 1e3 for r in lengths], "o-", label=name)
        axes[1].plot(ns, [r["memory_bytes"][name] / 2**20 for r in lengths], "o-", label=name)
    for ax, label in ((axes[0], "forward time (ms)"), (axes[1], "peak memory (MiB, XLA estimate)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.legend()
    names = list(studies[0]["valid_loss"])
    width = 0.8 / len(studies)
    for j, lm in enumerate(studies):
        axes[2].bar(np.arange(len(names)) + j * width, [lm["valid_loss"][n] / lm["valid_loss"][names[0]] - 1
                                                        for n in names], width, label=f"context {lm['context']}")
    axes[2].set_xticks(np.arange(len(names)) + 0.4 - width / 2, [n.replace(", ", ",\n") for n in names], fontsize=6)
    axes[2].axhline(0.02, color="grey", lw=0.8)
    axes[2].set_ylabel("validation loss vs dense - 1")
    axes[2].legend(fontsize=7)
    markers = ("o", "s", "^", "v")
    for j, lm in enumerate(studies):
        for (name, curve), color in zip(lm["routing_curves"].items(), ("C0", "C1", "C2", "C3", "k")):
            worst = [max(c["errors"]) for c in curve]
            axes[3].plot([c["keys"] / lm["context"] for c in curve], worst, marker=markers[j % 4],
                         ls="-" if j else "--", color=color, label=f"{name}, context {lm['context']}")
    axes[3].axhline(0.05, color="grey", lw=0.8)
    axes[3].axvline(1 / 8, color="grey", lw=0.8, ls=":")
    axes[3].set(xscale="log", yscale="log", xlabel="share of keys read exactly per query",
                ylabel="relative output error (worst layer)")
    axes[3].legend(fontsize=5)
    fig.suptitle(f"sparse vs dense causal attention ({HEADS} heads x {HEAD_DIM}; options {dict(SPARSE_OPTIONS)})")
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "add N = 32k, 64k and train the LM longer (GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024],
                        help="byte-LM contexts to train and measure error on (multiples of 256)")
    args = parser.parse_args(argv)
    bad = [c for c in args.contexts if c < 256 or c % 256]
    if bad:
        parser.error(f"--contexts must be multiples of 256 (so 1/16 of the keys fills whole blocks of 8), got {bad}")
    ns = [1024, 4096, 16384] + ([32768, 65536] if args.large else [])
    dtype = "bfloat16" if args.large else "float32"
    lengths = []
    for n in ns:
        lengths.append(measure_length(n, args.repeats, dtype))
        r = lengths[-1]
        print(f"N={n}: time ratio {r['time_ratio']}, memory ratio {r['memory_ratio']}", flush=True)
    studies = []
    for context in args.contexts:
        studies.append(lm_study(context=context, steps=1500 if args.large else 250, batch=max(1, 4096 // context),
                                eval_batches=4, distill_steps=1000 if args.large else 300))
        print(f"LM at context {context}:", studies[-1]["valid_loss"], flush=True)

    variants = [name for name in lengths[0]["time_s"] if name != "dense"]
    rows = [[r["n"], r["time_s"]["dense"] * 1e3] + [r["time_s"][v] * 1e3 for v in variants]
            + [r["time_ratio"][v] for v in variants] + [r["memory_bytes"]["dense"] / 2**20]
            + [r["memory_bytes"][v] / 2**20 for v in variants] + [r["memory_ratio"][v] for v in variants]
            for r in lengths]
    table = report.markdown_table(
        ["N", "dense ms"] + [f"{v} ms" for v in variants] + [f"{v} time ratio" for v in variants] + ["dense MiB"]
        + [f"{v} MiB" for v in variants] + [f"{v} memory ratio" for v in variants], rows)
    table += (f"\nForward pass of one causal attention call in {dtype}, batch 1, {HEADS} heads of {HEAD_DIM}, dense by "
              f"{lengths[0]['dense_kernel']}'s kernel; sparse options {dict(SPARSE_OPTIONS)}, routed by mean keys or "
              f"by a learned indexer {dict(INDEXER_OPTIONS)} (its projections given). Ratios are sparse / dense "
              "(targets at N = 16k: memory <= 0.125, time < 1). Memory is XLA's compiled estimate (arguments + "
              "outputs + temporaries).\n")
    for lm in studies:
        table += "\n" + lm_tables(lm)
    command = ("python -m benchmarks.sparse_attention" + (" --large" if args.large else "")
               + " --contexts " + " ".join(str(c) for c in args.contexts))
    payload = {"device": timing.device_description(), "command": command, "lengths": lengths, "lm_studies": studies,
               "options": dict(SPARSE_OPTIONS)}
    name = "sparse_attention_large" if args.large else "sparse_attention"
    report.publish(name, payload, table, plot(lengths, studies), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
