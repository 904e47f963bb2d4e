"""Train-step time and peak memory of hetnet's TransformerLM against the same model in flax.linen.

Both models have the same sizes and math (pre-norm RMSNorm blocks, GELU MLP, no biases, learned positions,
``jax.nn.dot_product_attention``); the script first copies hetnet's weights into the flax model and checks that the
logits agree, then times Adam train steps of each, interleaved, and reads XLA's compiled memory estimate.

    python -m benchmarks.transformer_step            # two CPU-sized configs, float32
    python -m benchmarks.transformer_step --large    # GPT-2-small-sized and a wider config, bfloat16 (GPU)

Both sides use the same attention kernel (cuDNN's where :func:`hetnet.attention.softmax.select_implementation`
picks it, else XLA's), so the ratio measures the code around it. On an accelerator whose peak is known
(:data:`PEAK_FLOPS`) it also reports MFU: model FLOPs per second over the peak, with model FLOPs counted as in the
PaLM paper, ``6 N + 12 L d T`` per token (N: parameters in matmuls, L layers, d width, T context).
"""

from __future__ import annotations

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import report, timing
from hetnet.attention import softmax
from hetnet.config import AttentionConfig, TransformerConfig
from hetnet.models import TransformerLM
from hetnet.train import make_train_step

SIZES = {
    "small": dict(d_model=128, num_heads=4, num_layers=2, max_len=128, batch=16),
    "medium": dict(d_model=256, num_heads=8, num_layers=4, max_len=256, batch=16),
}
LARGE_SIZES = {
    "gpt2-small": dict(d_model=768, num_heads=12, num_layers=12, max_len=1024, batch=16, vocab_size=50304),
    "wide": dict(d_model=1024, num_heads=16, num_layers=8, max_len=2048, batch=8, vocab_size=50304),
}
# Dense peak FLOP/s per device by compute dtype, from the vendors' data sheets (tensor cores, no sparsity).
PEAK_FLOPS = {
    "H100 80GB HBM3": {"bfloat16": 989e12, "float32": 495e12},
    "H100 PCIe": {"bfloat16": 756e12, "float32": 378e12},
    "H200": {"bfloat16": 989e12, "float32": 495e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "TPU v4": {"bfloat16": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12},
    "TPU v5p": {"bfloat16": 459e12},
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Returns the device's dense peak FLOP/s for ``dtype`` compute, or None when it is not in :data:`PEAK_FLOPS`."""
    for name, peaks in PEAK_FLOPS.items():
        if name in device_kind:
            return peaks.get(dtype)
    return None


def model_flops_per_step(cfg: TransformerConfig, batch: int) -> float:
    """Returns the train step's model FLOPs: ``(6 N + 12 L d T)`` per token, N the matmul parameters."""
    d, f, L, T = cfg.d_model, cfg.ffn_config.d_ff, cfg.num_layers, cfg.max_len
    matmul_params = L * (4 * d * d + 2 * d * f) + d * cfg.vocab_size
    return (6 * matmul_params + 12 * L * d * T) * batch * T


class FlaxBlock(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        dt = jnp.dtype(c.dtype)
        h_dim = c.d_model // c.num_heads
        h = nn.RMSNorm(epsilon=1e-6, dtype=dt, name="attn_norm")(x)
        q = nn.DenseGeneral((c.num_heads, h_dim), use_bias=False, dtype=dt, name="query")(h)
        k = nn.DenseGeneral((c.num_heads, h_dim), use_bias=False, dtype=dt, name="key")(h)
        v = nn.DenseGeneral((c.num_heads, h_dim), use_bias=False, dtype=dt, name="value")(h)
        kernel = softmax.select_implementation(q, k, AttentionConfig(c.d_model, c.num_heads), None)
        o = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=kernel)
        x = x + nn.DenseGeneral(c.d_model, axis=(-2, -1), use_bias=False, dtype=dt, name="out")(o)
        h = nn.RMSNorm(epsilon=1e-6, dtype=dt, name="ffn_norm")(x)
        h = nn.gelu(nn.Dense(c.ffn_config.d_ff, use_bias=False, dtype=dt, name="w_in")(h))
        return x + nn.Dense(c.d_model, use_bias=False, dtype=dt, name="w_out")(h)


class FlaxLM(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, tokens):
        c = self.cfg
        dt = jnp.dtype(c.dtype)
        x = nn.Embed(c.vocab_size, c.d_model, dtype=dt, name="tokens")(tokens)
        pos = self.param("positions", nn.initializers.normal(0.02), (c.max_len, c.d_model))
        x = x + pos[None, : tokens.shape[1]].astype(dt)
        for i in range(c.num_layers):
            x = FlaxBlock(c, name=f"block_{i}")(x)
        x = nn.RMSNorm(epsilon=1e-6, dtype=dt, name="final_norm")(x)
        return nn.Dense(c.vocab_size, use_bias=False, dtype=dt, name="unembed")(x).astype(jnp.float32)


def to_flax(params, cfg: TransformerConfig) -> dict:
    """Returns hetnet LM params rearranged into FlaxLM's param tree."""
    h = cfg.d_model // cfg.num_heads
    out = {
        "tokens": {"embedding": params["tokens"]},
        "positions": params["positions"],
        "final_norm": {"scale": params["final_norm"]["scale"]},
        "unembed": {"kernel": params["unembed"]},
    }
    for i in range(cfg.num_layers):
        b = jax.tree.map(lambda x, i=i: x[i], params["blocks"])
        a = b["attn"]
        out[f"block_{i}"] = {
            "attn_norm": {"scale": b["attn_norm"]["scale"]},
            "ffn_norm": {"scale": b["ffn_norm"]["scale"]},
            "query": {"kernel": a["query"].reshape(cfg.d_model, cfg.num_heads, h)},
            "key": {"kernel": a["key"]},
            "value": {"kernel": a["value"]},
            "out": {"kernel": a["out"].reshape(cfg.num_heads, h, cfg.d_model)},
            "w_in": {"kernel": b["ffn"]["w_in"]},
            "w_out": {"kernel": b["ffn"]["w_out"]},
        }
    return {"params": out}


def flax_train_step(model: FlaxLM, optimizer):
    def loss_fn(variables, batch):
        tokens = batch["tokens"]
        logits = model.apply(variables, tokens[:, :-1])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]))

    def step(variables, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(variables, batch)
        updates, opt_state = optimizer.update(grads, opt_state, variables)
        return optax.apply_updates(variables, updates), opt_state, {"loss": loss}

    return jax.jit(step)


def measure(size: dict, repeats: int, dtype: str = "float32") -> dict:
    cfg = TransformerConfig(
        vocab_size=size.get("vocab_size", 256), d_model=size["d_model"], num_heads=size["num_heads"],
        num_layers=size["num_layers"], max_len=size["max_len"], norm="rms", ffn="gelu", dtype=dtype,
    )
    params = TransformerLM(cfg).init(jax.random.key(0))
    variables = to_flax(params, cfg)
    model = FlaxLM(cfg)
    tokens = jax.random.randint(jax.random.key(1), (size["batch"], cfg.max_len + 1), 0, cfg.vocab_size)
    batch = {"tokens": tokens}

    ours = TransformerLM(cfg).apply(params, tokens[:, :-1])
    theirs = model.apply(variables, tokens[:, :-1])
    err = float(jnp.max(jnp.abs(ours - theirs)) / jnp.max(jnp.abs(theirs)))
    if err > (1e-4 if dtype == "float32" else 5e-2):
        raise AssertionError(f"the flax reference disagrees with hetnet (relative error {err:.2e}); not the same math")

    optimizer = optax.adam(1e-3)
    # Timed repeatedly on the same inputs, like the flax step it is compared with: no donation on either side.
    het_step = make_train_step(TransformerLM(cfg).loss, optimizer, donate=False)
    flax_step = flax_train_step(model, optimizer)
    het_state, flax_state = optimizer.init(params), optimizer.init(variables)
    times = timing.time_interleaved(
        {
            "hetnet": lambda: het_step(params, het_state, batch),
            "flax": lambda: flax_step(variables, flax_state, batch),
        },
        repeats=repeats,
    )
    mem = {
        "hetnet": timing.compiled_memory_bytes(het_step, params, het_state, batch),
        "flax": timing.compiled_memory_bytes(flax_step, variables, flax_state, batch),
    }
    n_params = sum(x.size for x in jax.tree.leaves(params))
    flops = model_flops_per_step(cfg, size["batch"])
    peak = peak_flops(getattr(jax.devices()[0], "device_kind", ""), dtype)
    mfu = {k: (flops / t["median"] / peak if peak else None) for k, t in times.items()}
    h_dim = cfg.d_model // cfg.num_heads
    probe = jnp.zeros((1, 8, cfg.num_heads, h_dim), jnp.dtype(dtype))
    return {
        "config": size,
        "dtype": dtype,
        "attention_kernel": softmax.select_implementation(probe, probe, cfg.attention_config, None),
        "model_flops_per_step": flops,
        "mfu": mfu,
        "params": n_params,
        "logit_rel_error": err,
        "time_s": {k: v["median"] for k, v in times.items()},
        "memory_bytes": mem,
        "time_ratio": times["hetnet"]["median"] / times["flax"]["median"],
        "memory_ratio": mem["hetnet"] / mem["flax"],
    }


def plot(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, label in [(axes[0], "time_s", "train-step time (ms)"), (axes[1], "memory_bytes", "peak memory (MiB)")]:
        scale = 1e3 if key == "time_s" else 1 / 2**20
        x = np.arange(len(names))
        for j, impl in enumerate(["hetnet", "flax"]):
            ax.bar(x + (j - 0.5) * 0.38, [results[n][key][impl] * scale for n in names], 0.38, label=impl)
        ax.set_xticks(x, names)
        ax.set_ylabel(label)
    axes[0].legend()
    fig.suptitle("hetnet TransformerLM vs flax.linen, Adam train step")
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "GPU-sized configs in bfloat16")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="compute dtype (params stay float32); default float32, bfloat16 with --large")
    args = parser.parse_args(argv)
    sizes = LARGE_SIZES if args.large else SIZES
    dtype = args.dtype or ("bfloat16" if args.large else "float32")
    results = {}
    for name, size in sizes.items():
        results[name] = measure(size, args.repeats, dtype)
        r = results[name]
        mfu = r["mfu"]["hetnet"]
        print(f"{name}: time ratio {r['time_ratio']:.3f}, memory ratio {r['memory_ratio']:.3f}, MFU "
              + (f"{100 * mfu:.1f}%" if mfu is not None else "n/a (peak unknown for this device)"), flush=True)

    def pct(x):
        return f"{100 * x:.1f}%" if x is not None else "n/a"

    rows = [
        [n, r["params"], r["dtype"], r["attention_kernel"], r["time_s"]["hetnet"] * 1e3, r["time_s"]["flax"] * 1e3,
         r["time_ratio"], r["memory_bytes"]["hetnet"] / 2**20, r["memory_bytes"]["flax"] / 2**20,
         r["memory_ratio"], pct(r["mfu"]["hetnet"]), pct(r["mfu"]["flax"])]
        for n, r in results.items()
    ]
    table = report.markdown_table(
        ["size", "params", "compute", "attention kernel", "hetnet ms", "flax ms", "time ratio", "hetnet MiB",
         "flax MiB", "memory ratio", "hetnet MFU", "flax MFU"], rows
    )
    table += ("\nRatios are hetnet / flax (target: time ratio <= 1.05 on CPU, <= 1.0 on an accelerator). Memory is "
              "XLA's compiled estimate. MFU: model FLOPs (6N + 12LdT per token) per second over the device's dense "
              "peak; n/a where the peak is unknown (CPUs).\n")
    payload = {
        "device": timing.device_description(),
        "command": "python -m benchmarks.transformer_step" + (" --large" if args.large else "")
                   + (f" --dtype {args.dtype}" if args.dtype else ""),
        "results": results,
    }
    name = "transformer_step_large" if args.large else "transformer_step"
    report.publish(name, payload, table, plot(results), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
