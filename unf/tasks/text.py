"""Language-model tasks on the embedded standard-library text: a character LSTM, a hetnet TransformerLM and a decoder
written with Flax nnx layers."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hetnet import data, validation
from hetnet.config import TransformerConfig
from hetnet.models import TransformerLM
from unf import spec as spec_lib
from unf.tasks.base import Task
from unf.tasks.nnx_models import nnx_task

# Enough for the CPU-sized tasks; a model that reads its training split many times over needs more (``text_bytes``).
TEXT_BYTES = 1_000_000


@functools.lru_cache(maxsize=4)
def _corpus(text_bytes: int = TEXT_BYTES) -> data.TextCorpus:
    validation.positive_int("text_bytes", text_bytes, "bytes of standard-library source for both splits")
    return data.stdlib_corpus(max_bytes=text_bytes)


def _window_sampler(batch: int, length: int, split: str = "train", text_bytes: int = TEXT_BYTES):
    tokens = jnp.asarray(getattr(_corpus(text_bytes), split))
    return lambda key: {"tokens": data.sample_windows(key, tokens, batch, length)}


@functools.lru_cache(maxsize=32)
def lstm_lm(hidden: int = 32, embed: int = 16, seq: int = 32, batch: int = 16) -> Task:
    """A byte-level LSTM language model: embedding, one LSTM cell, linear readout."""
    cell = nn.LSTMCell(hidden)
    vocab = data.BYTE_VOCAB

    def init(key):
        k_embed, k_cell, k_out = jax.random.split(key, 3)
        carry = cell.initialize_carry(k_cell, (1, embed))
        return {
            "embed": jax.random.normal(k_embed, (vocab, embed)) * 0.1,
            "cell": cell.init(k_cell, carry, jnp.zeros((1, embed)))["params"],
            "readout": {"w": jax.nn.initializers.lecun_normal()(k_out, (hidden, vocab)), "b": jnp.zeros((vocab,))},
        }

    def loss(params, batch_):
        tokens = batch_["tokens"]
        x = params["embed"][tokens[:, :-1]]
        carry = cell.initialize_carry(jax.random.key(0), x[:, 0].shape)

        def step(c, xt):
            c, h = cell.apply({"params": params["cell"]}, c, xt)
            return c, h

        _, hs = jax.lax.scan(step, carry, jnp.swapaxes(x, 0, 1))
        logits = jnp.swapaxes(hs, 0, 1) @ params["readout"]["w"] + params["readout"]["b"][None, None]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]))

    example = jax.eval_shape(init, jax.random.key(0))
    cell_labels = spec_lib.rnn(example["cell"], input_label="embed", hidden_label="hidden").axes_tree()
    labels = {"embed": ("vocab", "embed"), "cell": cell_labels, "readout": {"w": ("hidden", "vocab"), "b": ("vocab",)}}
    spec = spec_lib.from_labels(example, labels)
    config = (("hidden", hidden), ("embed", embed), ("seq", seq), ("batch", batch))
    return Task("lstm_lm", config, init, loss, _window_sampler(batch, seq + 1), spec,
                _window_sampler(batch, seq + 1, "valid"))


@functools.lru_cache(maxsize=64)
def transformer_lm(
    d_model: int = 16, layers: int = 1, heads: int = 2, seq: int = 16, batch: int = 8, attention: str = "softmax",
    kv_heads: int | None = None, ffn: str = "gelu", norm: str = "rms", text_bytes: int = TEXT_BYTES,
) -> Task:
    """A byte-level hetnet TransformerLM (any attention variant; ``kv_heads < heads`` for grouped-query attention;
    any feed-forward and norm kind). Its spec permutes vocabulary and position axes as groups of their own, as the
    original UNF code does, which keeps equivariant optimizers small. Validation batches come from held-out files;
    ``text_bytes`` bounds the standard-library source both splits take (nine tenths of it for training), so a run
    that would read the default split many times over can have a larger one."""
    cfg = TransformerConfig(vocab_size=data.BYTE_VOCAB, d_model=d_model, num_heads=heads, num_layers=layers,
                            max_len=seq, attention=attention, num_kv_heads=kv_heads, ffn=ffn, norm=norm)
    model = TransformerLM(cfg)
    spec = spec_lib.from_hetnet(jax.eval_shape(model.init, jax.random.key(0)), model.axes, io_as_groups=True)
    config = (("d_model", d_model), ("layers", layers), ("heads", heads), ("seq", seq), ("batch", batch),
              ("attention", attention))
    extras = (("kv_heads", kv_heads), ("ffn", ffn), ("norm", norm), ("text_bytes", text_bytes))
    config += tuple((k, v) for (k, v), default in zip(extras, (None, "gelu", "rms", TEXT_BYTES)) if v != default)
    return Task("transformer_lm", config, model.init, model.loss, _window_sampler(batch, seq + 1, text_bytes=text_bytes),
                spec, _window_sampler(batch, seq + 1, "valid", text_bytes))


class _NnxBlock(nnx.Module):
    """A pre-norm decoder block as Flax's nnx examples write it: nnx.MultiHeadAttention and a GELU MLP."""

    def __init__(self, d_model: int, heads: int, rngs: nnx.Rngs):
        self.attention_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(num_heads=heads, in_features=d_model, decode=False, rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.mlp_in = nnx.Linear(d_model, 4 * d_model, rngs=rngs)
        self.mlp_out = nnx.Linear(4 * d_model, d_model, rngs=rngs)

    def __call__(self, x, mask):
        x = x + self.attention(self.attention_norm(x), mask=mask)
        return x + self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(x))))


class _NnxGPT(nnx.Module):
    """Token and learned position embeddings, ``layers`` blocks (a Python loop, not a scan), a final LayerNorm and an
    untied readout: the shape of Flax's nnx MiniGPT example."""

    def __init__(self, d_model: int, layers: int, heads: int, seq: int, rngs: nnx.Rngs):
        self.token_embed = nnx.Embed(data.BYTE_VOCAB, d_model, rngs=rngs)
        self.position_embed = nnx.Embed(seq, d_model, rngs=rngs)
        self.blocks = nnx.List([_NnxBlock(d_model, heads, rngs) for _ in range(layers)])
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.readout = nnx.Linear(d_model, data.BYTE_VOCAB, rngs=rngs)

    def __call__(self, tokens):
        x = self.token_embed(tokens) + self.position_embed(jnp.arange(tokens.shape[1]))[None]
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.readout(self.norm(x))


@functools.lru_cache(maxsize=16)
def nnx_gpt_lm(d_model: int = 16, layers: int = 1, heads: int = 2, seq: int = 16, batch: int = 8) -> Task:
    """A byte-level decoder written with Flax nnx layers (``nnx.MultiHeadAttention``, ``nnx.LayerNorm``, learned
    positions, an untied readout; Flax's nnx MiniGPT example in form), not of the hetnet make: its params are the
    ``nnx.Param`` state as ``nnx.to_pure_dict`` writes it (the tree ``nnx.Optimizer`` hands an optimizer), and no
    axis is named, so its spec is read off the loss by :func:`unf.spec.infer`."""
    for name, value in (("d_model", d_model), ("layers", layers), ("heads", heads), ("seq", seq), ("batch", batch)):
        validation.positive_int(name, value)
    if d_model % heads:
        raise ValueError(f"heads must divide d_model, got d_model={d_model} and heads={heads}.")
    def loss(model, batch_):
        tokens = batch_["tokens"]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(model(tokens[:, :-1]), tokens[:, 1:]))

    config = (("d_model", d_model), ("layers", layers), ("heads", heads), ("seq", seq), ("batch", batch))
    return nnx_task("nnx_gpt_lm", lambda rngs: _NnxGPT(d_model, layers, heads, seq, rngs), loss,
                    _window_sampler(batch, seq + 1), sample_valid_batch=_window_sampler(batch, seq + 1, "valid"),
                    config=config)

