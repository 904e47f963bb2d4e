"""Small versions of the models of Flax's own examples, written as those examples write them.

- ``Lm1bLM``: the linen lm1b ``TransformerLM`` style: logical partitioning names on every kernel, a post-attention
  MLP, LayerNorm, a constant sinusoidal position table (not a param), logits through the shared embedding.
- ``MiniGPT``: the nnx miniGPT of the Flax docs: kernels partitioned by *mesh* axes (``(None, "model")``).
- ``TutorialCNN``: the nnx MNIST CNN of the Flax tutorial: two convs, average pooling, a flatten (7 * 7 * 64 = 3,136
  features at 28 x 28 inputs), two Linears; no partitioning annotations at all.
- ``scan_gpt``: an nnx transformer whose blocks are made by ``nnx.vmap`` (a leading ``layers`` axis) and run by
  ``nnx.scan``, with each block's MLP an ``nnx.Sequential``, as in Flax's scan-over-layers guide.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

INIT = nn.initializers.normal(0.3)


def logical(*names):
    return nn.with_logical_partitioning(INIT, names)


def sinusoidal(max_len: int, d: int) -> np.ndarray:
    position = np.arange(max_len)[:, None]
    div = np.exp(np.arange(0, d, 2) * -(np.log(10_000.0) / d))
    table = np.zeros((max_len, d), np.float32)
    table[:, 0::2] = np.sin(position * div)
    table[:, 1::2] = np.cos(position * div)
    return table


class Lm1bBlock(nn.Module):
    heads: int
    head_dim: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        h = nn.LayerNorm(scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                         bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(x)
        q, k, v = (nn.DenseGeneral((self.heads, self.head_dim), kernel_init=logical("embed", "heads", "kv"),
                                   use_bias=False, name=n)(h) for n in ("query", "key", "value"))
        causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
        logits = jnp.einsum("bshk,bthk->bhst", q, k) / np.sqrt(self.head_dim)
        attn = jax.nn.softmax(jnp.where(causal, logits, -1e9), axis=-1)
        heads = jnp.einsum("bhst,bthk->bshk", attn, v)
        x = x + nn.DenseGeneral(d, axis=(-2, -1), kernel_init=logical("heads", "kv", "embed"), use_bias=False,
                                name="out")(heads)
        h = nn.LayerNorm(scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                         bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(x)
        h = nn.Dense(self.mlp_dim, kernel_init=logical("embed", "mlp"),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))(h)
        h = nn.Dense(d, kernel_init=logical("mlp", "embed"),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(jax.nn.relu(h))
        return x + h


class Lm1bLM(nn.Module):
    vocab: int = 31
    d: int = 16
    heads: int = 2
    head_dim: int = 4
    mlp_dim: int = 24
    layers: int = 2
    max_len: int = 32

    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(self.vocab, self.d, embedding_init=logical("vocab", "embed"))
        x = embed(tokens) + sinusoidal(self.max_len, self.d)[None, : tokens.shape[1]]
        for i in range(self.layers):
            x = Lm1bBlock(self.heads, self.head_dim, self.mlp_dim, name=f"encoderdecoderblock_{i}")(x)
        x = nn.LayerNorm(scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                         bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(x)
        return embed.attend(x)


def mesh_partitioned(*names):
    return nnx.with_partitioning(nnx.initializers.xavier_uniform(), names, eager_sharding=False)


class MiniGPTBlock(nnx.Module):
    def __init__(self, d, heads, ff, rngs):
        self.attention = nnx.MultiHeadAttention(heads, d, kernel_init=mesh_partitioned(None, "model"),
                                                decode=False, rngs=rngs)
        self.norm = nnx.LayerNorm(d, rngs=rngs)
        self.up = nnx.Linear(d, ff, kernel_init=mesh_partitioned(None, "model"), rngs=rngs)
        self.down = nnx.Linear(ff, d, kernel_init=mesh_partitioned("model", None), rngs=rngs)

    def __call__(self, x):
        mask = nnx.make_causal_mask(x[..., 0])
        x = self.norm(x + self.attention(x, mask=mask))
        return x + self.down(jax.nn.relu(self.up(x)))


class MiniGPT(nnx.Module):
    def __init__(self, rngs, vocab=29, d=16, heads=2, ff=24, layers=2, max_len=16):
        self.tokens = nnx.Embed(vocab, d, embedding_init=mesh_partitioned("model", None), rngs=rngs)
        self.positions = nnx.Embed(max_len, d, embedding_init=mesh_partitioned("model", None), rngs=rngs)
        self.blocks = nnx.List([MiniGPTBlock(d, heads, ff, rngs) for _ in range(layers)])
        self.head = nnx.Linear(d, vocab, kernel_init=mesh_partitioned(None, "model"), rngs=rngs)

    def __call__(self, tokens):
        x = self.tokens(tokens) + self.positions(jnp.arange(tokens.shape[1]))[None]
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class TutorialCNN(nnx.Module):
    def __init__(self, rngs, side=28):
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
        self.linear1 = nnx.Linear((side // 4) ** 2 * 64, 256, rngs=rngs)
        self.linear2 = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x):
        pool = lambda y: nnx.avg_pool(y, window_shape=(2, 2), strides=(2, 2))  # noqa: E731
        x = pool(nnx.relu(self.conv1(x)))
        x = pool(nnx.relu(self.conv2(x)))
        x = x.reshape(x.shape[0], -1)
        return self.linear2(nnx.relu(self.linear1(x)))


def tutorial_cnn_labels(params) -> dict:
    """The CNN's labels by hand: the first conv's channels and the hidden Linear's units permute. The flatten mixes
    positions with the second conv's channels, so neither those channels nor the flattened axis are permuted (nor
    are the spatial kernel axes, the input channel and the classes)."""
    return {"conv1": {"kernel": (None, None, None, "c1"), "bias": ("c1",)},
            "conv2": {"kernel": (None, None, "c1", None), "bias": (None,)},
            "linear1": {"kernel": (None, "h"), "bias": ("h",)},
            "linear2": {"kernel": ("h", None), "bias": (None,)}}


def logical_kernel(*names):
    return nnx.with_partitioning(nnx.initializers.normal(0.3), names, eager_sharding=False)


class ScanBlock(nnx.Module):
    def __init__(self, d, heads, head_dim, ff, rngs):
        self.head_dim = head_dim
        self.q = nnx.Param(logical_kernel("embed", "heads", "kv")(rngs.params(), (d, heads, head_dim)))
        self.k = nnx.Param(logical_kernel("embed", "heads", "kv")(rngs.params(), (d, heads, head_dim)))
        self.v = nnx.Param(logical_kernel("embed", "heads", "kv")(rngs.params(), (d, heads, head_dim)))
        self.o = nnx.Param(logical_kernel("heads", "kv", "embed")(rngs.params(), (heads, head_dim, d)))
        self.mlp = nnx.Sequential(
            nnx.Linear(d, ff, kernel_init=logical_kernel("embed", "mlp"), bias_init=logical_kernel("mlp"), rngs=rngs),
            jax.nn.gelu,
            nnx.Linear(ff, d, kernel_init=logical_kernel("mlp", "embed"), bias_init=logical_kernel("embed"),
                       rngs=rngs))

    def __call__(self, x):
        q, k, v = (jnp.einsum("bsd,dhk->bshk", x, w[...]) for w in (self.q, self.k, self.v))
        attn = jax.nn.softmax(jnp.einsum("bshk,bthk->bhst", q, k) / np.sqrt(self.head_dim), axis=-1)
        x = x + jnp.einsum("bhst,bthk,hkd->bsd", attn, v, self.o[...])
        return x + self.mlp(x)


class ScanGPT(nnx.Module):
    def __init__(self, rngs, vocab=23, d=12, heads=2, head_dim=4, ff=20, layers=3):
        self.embed = nnx.Param(logical_kernel("vocab", "embed")(rngs.params(), (vocab, d)))

        @nnx.split_rngs(splits=layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def blocks(r):
            return ScanBlock(d, heads, head_dim, ff, r)

        self.blocks = blocks(rngs)
        self.unembed = nnx.Param(logical_kernel("embed", "vocab")(rngs.params(), (d, vocab)))

    def __call__(self, tokens):
        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def run(block, x):
            return block(x)

        return run(self.blocks, self.embed[...][tokens]) @ self.unembed[...]


def nnx_apply(model):
    """Returns ``fn(params, *args)``: the model called with its ``nnx.Param`` state replaced by ``params`` (a pure
    dict, as ``nnx.to_pure_dict(nnx.state(model, nnx.Param))`` writes it)."""
    graphdef, state, rest = nnx.split(model, nnx.Param, ...)

    def fn(params, *args):
        replaced = jax.tree.map(lambda v: v, state)
        nnx.replace_by_pure_dict(replaced, params)
        return nnx.merge(graphdef, replaced, rest)(*args)

    return fn


def norm(d, layer_norm, rngs):
    """An RMS norm, or a LayerNorm with its offset, its vectors named ``embed``."""
    named = lambda init: nnx.with_partitioning(init, ("embed",), eager_sharding=False)  # noqa: E731
    if layer_norm:
        return nnx.LayerNorm(d, scale_init=named(nnx.initializers.ones), bias_init=named(nnx.initializers.zeros),
                             rngs=rngs)
    return nnx.RMSNorm(d, scale_init=named(nnx.initializers.ones), rngs=rngs)


class DocsBlock(nnx.Module):
    """A bias-free pre-norm decoder block with grouped-query attention, every axis named MaxText's way; ``gated``
    makes its MLP SwiGLU, ``layer_norm`` its norms LayerNorms with offsets."""

    def __init__(self, d, heads, kv_heads, head_dim, ff, rngs, gated=False, layer_norm=False):
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.attn_norm, self.mlp_norm = (norm(d, layer_norm, rngs) for _ in range(2))
        self.query = nnx.Param(logical_kernel("embed", "q_heads", "kv")(rngs.params(), (d, heads, head_dim)))
        self.key = nnx.Param(logical_kernel("embed", "kv_heads", "kv")(rngs.params(), (d, kv_heads, head_dim)))
        self.value = nnx.Param(logical_kernel("embed", "kv_heads", "kv")(rngs.params(), (d, kv_heads, head_dim)))
        self.out = nnx.Param(logical_kernel("q_heads", "kv", "embed")(rngs.params(), (heads, head_dim, d)))
        self.up = nnx.Linear(d, ff, use_bias=False, kernel_init=logical_kernel("embed", "mlp"), rngs=rngs)
        self.gate = (nnx.Linear(d, ff, use_bias=False, kernel_init=logical_kernel("embed", "mlp"), rngs=rngs)
                     if gated else None)
        self.down = nnx.Linear(ff, d, use_bias=False, kernel_init=logical_kernel("mlp", "embed"), rngs=rngs)

    def __call__(self, x):
        h = self.attn_norm(x)
        q = jnp.einsum("bsd,dhk->bshk", h, self.query[...])
        k, v = (jnp.repeat(jnp.einsum("bsd,dhk->bshk", h, w[...]), self.heads // self.kv_heads, axis=2)
                for w in (self.key, self.value))
        causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
        logits = jnp.where(causal, jnp.einsum("bshk,bthk->bhst", q, k) / np.sqrt(self.head_dim), -1e9)
        x = x + jnp.einsum("bhst,bthk,hkd->bsd", jax.nn.softmax(logits, axis=-1), v, self.out[...])
        h = self.mlp_norm(x)
        return x + self.down(jax.nn.gelu(self.up(h)) if self.gate is None else jax.nn.silu(self.gate(h)) * self.up(h))


class DocsLM(nnx.Module):
    """A decoder LM written as the Flax docs write nnx models, with MaxText's logical axis names."""

    def __init__(self, rngs, vocab=19, d=16, heads=4, kv_heads=2, head_dim=4, ff=32, layers=2, gated=False,
                 layer_norm=False):
        self.embed = nnx.Embed(vocab, d, embedding_init=logical_kernel("vocab", "embed"), rngs=rngs)
        self.layers = nnx.List([DocsBlock(d, heads, kv_heads, head_dim, ff, rngs, gated, layer_norm)
                                for _ in range(layers)])
        self.final_norm = norm(d, layer_norm, rngs)
        self.lm_head = nnx.Linear(d, vocab, use_bias=False, kernel_init=logical_kernel("embed", "vocab"), rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.final_norm(x))
