"""Train-step time and peak memory of hetnet's TransformerLM against the same model in flax.linen.

Both models have the same sizes and math (pre-norm RMSNorm blocks, GELU MLP, no biases, learned positions,
``jax.nn.dot_product_attention``); the script first copies hetnet's weights into the flax model and checks that the
logits agree, then times Adam train steps of each, interleaved, and reads XLA's compiled memory estimate.

    python -m benchmarks.transformer_step            # two CPU-sized configs
    python -m benchmarks.transformer_step --large    # two GPU-sized configs
"""

from __future__ import annotations

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import report, timing
from hetnet.config import TransformerConfig
from hetnet.models import TransformerLM
from hetnet.train import make_train_step

SIZES = {
    "small": dict(d_model=128, num_heads=4, num_layers=2, max_len=128, batch=16),
    "medium": dict(d_model=256, num_heads=8, num_layers=4, max_len=256, batch=16),
}
LARGE_SIZES = {
    "gpt2-small-ish": dict(d_model=768, num_heads=12, num_layers=12, max_len=1024, batch=16),
    "wide": dict(d_model=1024, num_heads=16, num_layers=8, max_len=2048, batch=8),
}


class FlaxBlock(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        h_dim = c.d_model // c.num_heads
        h = nn.RMSNorm(epsilon=1e-6, name="attn_norm")(x)
        q = nn.DenseGeneral((c.num_heads, h_dim), use_bias=False, name="query")(h)
        k = nn.DenseGeneral((c.num_heads, h_dim), use_bias=False, name="key")(h)
        v = nn.DenseGeneral((c.num_heads, h_dim), use_bias=False, name="value")(h)
        o = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        x = x + nn.DenseGeneral(c.d_model, axis=(-2, -1), use_bias=False, name="out")(o)
        h = nn.RMSNorm(epsilon=1e-6, name="ffn_norm")(x)
        h = nn.gelu(nn.Dense(c.ffn_config.d_ff, use_bias=False, name="w_in")(h))
        return x + nn.Dense(c.d_model, use_bias=False, name="w_out")(h)


class FlaxLM(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, tokens):
        c = self.cfg
        x = nn.Embed(c.vocab_size, c.d_model, name="tokens")(tokens)
        pos = self.param("positions", nn.initializers.normal(0.02), (c.max_len, c.d_model))
        x = x + pos[None, : tokens.shape[1]]
        for i in range(c.num_layers):
            x = FlaxBlock(c, name=f"block_{i}")(x)
        x = nn.RMSNorm(epsilon=1e-6, name="final_norm")(x)
        return nn.Dense(c.vocab_size, use_bias=False, name="unembed")(x)


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


def measure(size: dict, repeats: int) -> dict:
    cfg = TransformerConfig(
        vocab_size=256, d_model=size["d_model"], num_heads=size["num_heads"], num_layers=size["num_layers"],
        max_len=size["max_len"], norm="rms", ffn="gelu",
    )
    params = TransformerLM(cfg).init(jax.random.key(0))
    variables = to_flax(params, cfg)
    model = FlaxLM(cfg)
    tokens = jax.random.randint(jax.random.key(1), (size["batch"], cfg.max_len + 1), 0, cfg.vocab_size)
    batch = {"tokens": tokens}

    ours = TransformerLM(cfg).apply(params, tokens[:, :-1])
    theirs = model.apply(variables, tokens[:, :-1])
    err = float(jnp.max(jnp.abs(ours - theirs)) / jnp.max(jnp.abs(theirs)))
    if err > 1e-4:
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
    return {
        "config": size,
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
    parser = report.argument_parser(__doc__, "GPU-sized configs")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    sizes = LARGE_SIZES if args.large else SIZES
    results = {}
    for name, size in sizes.items():
        results[name] = measure(size, args.repeats)
        r = results[name]
        print(f"{name}: time ratio {r['time_ratio']:.3f}, memory ratio {r['memory_ratio']:.3f}", flush=True)
    rows = [
        [n, r["params"], r["time_s"]["hetnet"] * 1e3, r["time_s"]["flax"] * 1e3, r["time_ratio"],
         r["memory_bytes"]["hetnet"] / 2**20, r["memory_bytes"]["flax"] / 2**20, r["memory_ratio"]]
        for n, r in results.items()
    ]
    table = report.markdown_table(
        ["size", "params", "hetnet ms", "flax ms", "time ratio", "hetnet MiB", "flax MiB", "memory ratio"], rows
    )
    table += "\nRatios are hetnet / flax (target: time ratio <= 1.05). Memory is XLA's compiled estimate.\n"
    payload = {
        "device": timing.device_description(),
        "command": "python -m benchmarks.transformer_step" + (" --large" if args.large else ""),
        "results": results,
    }
    name = "transformer_step_large" if args.large else "transformer_step"
    paths = report.write(name, payload, table, plot(results), args.out)
    print(table)
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
