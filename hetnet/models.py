"""Models bound to their configs: :class:`Body` (positions, blocks, final norm) and :class:`TransformerLM`
(next-token); :class:`~hetnet.classifier.SequenceClassifier` lives in :mod:`hetnet.classifier`.

A model is a frozen, hashable object: ``init(key) -> params`` returns arrays only, ``apply(params, inputs)`` needs
nothing static from the caller and ``axes`` comes from the config alone, so ``jax.jit(model.apply)``,
``jax.eval_shape(model.init, key)``, ``jax.vmap`` and ``jax.grad(model.loss)`` work as they are.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from hetnet import embedding
from hetnet.attention.projections import check_padding_mask
from hetnet.blocks import Block
from hetnet.compiled import compiled_init
from hetnet.config import TransformerConfig
from hetnet.norms import Norm
from hetnet.stacks import STACKS, HyperSETLayer, SharedBlock, StackedBlocks


def check_config(name: str, cfg, expected: type) -> None:
    if not isinstance(cfg, expected):
        raise TypeError(f"{name} takes a {expected.__name__}, got {type(cfg).__name__}.")


@dataclasses.dataclass(frozen=True)
class Body:
    """Learned positions (unless ``cfg.positions == "rope"``), the layers and a final norm, bound to ``cfg``.

    The layers are run by :attr:`stack`, chosen once from ``cfg.block`` (:mod:`hetnet.stacks`): ``"standard"``,
    ``params["blocks"]`` stacked along a leading ``layers`` axis and scanned; ``"recurrent"``,
    ``params["shared_block"]`` run ``num_layers`` times; ``"hyperset"``, ``params["hyperset"]``, the Hyper-SET layer.
    """

    cfg: TransformerConfig

    def __post_init__(self):
        check_config("Body", self.cfg, TransformerConfig)

    @property
    def block(self) -> Block:
        return Block(self.cfg)

    @functools.cached_property
    def stack(self) -> StackedBlocks | SharedBlock | HyperSETLayer:
        """What runs the layers (:mod:`hetnet.stacks`), resolved from ``cfg.block``."""
        return STACKS[self.cfg.block](self.cfg)

    @property
    def norm(self) -> Norm:
        return Norm(self.cfg.norm_config)

    @compiled_init
    def init(self, key: jax.Array) -> dict:
        """Returns the body's params; a shared (recurrent or Hyper-SET) body's do not depend on ``num_layers``."""
        k_pos, k_layers = jax.random.split(key)
        params = {"final_norm": self.norm.init(key)}
        if self.cfg.positions == "learned":
            params["positions"] = embedding.init_positions(k_pos, self.cfg.max_len, self.cfg.d_model)
        params[self.stack.key] = self.stack.init(k_layers)
        return params

    @functools.cached_property
    def axes(self) -> dict:
        axes = {"final_norm": self.norm.axes}
        if self.cfg.positions == "learned":
            axes["positions"] = embedding.POSITION_AXES
        axes[self.stack.key] = self.stack.axes
        return axes

    def _add_positions(self, params, x: jax.Array) -> jax.Array:
        # Rotary positions enter inside attention; only a learned table is added to the stream.
        return embedding.add_positions(params["positions"], x) if self.cfg.positions == "learned" else x

    def residual_states(self, params, x: jax.Array, *, padding_mask=None) -> jax.Array:
        """Returns the residual stream after the positions and after every block (for probing).

        x: [batch, seq, d_model] embedded inputs -> [num_layers + 1, batch, seq, d_model], before the final norm
        """
        if not self.stack.has_blocks:
            raise ValueError("residual_states reads a body of blocks; this config's block is 'hyperset' "
                             "(use HyperSET.iterate for its trajectory).")
        check_padding_mask(padding_mask, x)
        x = self._add_positions(params, x)
        _, states = self.stack.run(params[self.stack.key], x, padding_mask, keep_states=True)
        return jnp.concatenate([x[None], states])

    def aux_loss(self, params, x: jax.Array, *, padding_mask=None, states: jax.Array | None = None) -> jax.Array:
        """Returns the mean over layers of the attention variant's own loss (:meth:`Attention.aux_loss`; for
        sparse attention with a learned indexer, the indexer's distillation loss toward dense attention, whose
        gradient reaches only the indexers' kernels).

        x: [batch, seq, d_model] embedded inputs; padding_mask: [batch, seq] bool or None; states: the residual
        stream each layer's attention reads, [num_layers + 1, batch, seq, d_model] as :meth:`residual_states`
        returns (default: this body's own) -> scalar
        """
        if not self.block.attention.has_aux_loss:
            raise ValueError(f"aux_loss needs an attention variant with a loss of its own (sparse attention with "
                             f"router='indexer'); this config has attention={self.cfg.attention!r} with "
                             f"{self.cfg.attention_options}.")
        if states is None:
            # The forward that makes the targets' inputs is never differentiated.
            states = self.residual_states(*jax.lax.stop_gradient((params, x)), padding_mask=padding_mask)
        states = jax.lax.stop_gradient(states)[:-1]
        block = self.block

        # Recomputed in the backward pass: saved, each layer's loss would keep its whole forward (at long context
        # ten times the model's own training memory); recomputed, one layer's at a time.
        @jax.checkpoint
        def one(layer_params, h):
            h = block.norm.apply(layer_params["attn_norm"], h)
            return block.attention.aux_loss(layer_params["attn"], h, padding_mask=padding_mask)

        layers = params[self.stack.key]
        return sum(one(self.stack.layer(layers, i), states[i]) for i in range(self.cfg.num_layers)) / self.cfg.num_layers

    def apply(self, params, x: jax.Array, *, padding_mask=None) -> jax.Array:
        """Returns the final-normed residual stream after adding positions and running the body.

        x: [batch, seq, d_model] embedded inputs; padding_mask: [batch, seq] bool or None -> [batch, seq, d_model]
        """
        check_padding_mask(padding_mask, x)
        x = self._add_positions(params, x)
        x, _ = self.stack.run(params[self.stack.key], x, padding_mask, keep_states=False)
        return self.norm.apply(params["final_norm"], x)


@dataclasses.dataclass(frozen=True)
class TransformerLM:
    """A next-token language model bound to ``cfg``: token embedding, :class:`Body`, unembedding."""

    cfg: TransformerConfig

    def __post_init__(self):
        check_config("TransformerLM", self.cfg, TransformerConfig)

    @property
    def body(self) -> Body:
        return Body(self.cfg)

    @compiled_init
    def init(self, key: jax.Array) -> dict:
        """Returns the model's params (arrays only)."""
        k_tok, k_body, k_out = jax.random.split(key, 3)
        params = self.body.init(k_body)
        params["tokens"] = embedding.init_tokens(k_tok, self.cfg.vocab_size, self.cfg.d_model)
        params["unembed"] = embedding.init_dense(k_out, self.cfg.d_model, self.cfg.vocab_size)
        return params

    @functools.cached_property
    def axes(self) -> dict:
        """The label tuple of every params axis, a tree with the structure of ``init``'s params."""
        return {**self.body.axes, "tokens": embedding.TOKEN_AXES, "unembed": ("embed", "vocab")}

    def embed(self, params, tokens: jax.Array) -> jax.Array:
        """Returns the token embeddings in the compute dtype.

        tokens: [batch, seq] int in [0, vocab_size) -> [batch, seq, d_model]
        """
        embedding.check_tokens(tokens, self.cfg.vocab_size)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, seq], got shape {tuple(tokens.shape)}.")
        return embedding.embed_tokens(params["tokens"], tokens, jnp.dtype(self.cfg.dtype))

    def apply(self, params, tokens: jax.Array, *, padding_mask=None) -> jax.Array:
        """Returns next-token logits in float32.

        tokens: [batch, seq] int in [0, vocab_size); padding_mask: [batch, seq] bool or None
        -> [batch, seq, vocab_size]
        """
        h = self.body.apply(params, self.embed(params, tokens), padding_mask=padding_mask)
        return (h @ params["unembed"].astype(h.dtype)).astype(jnp.float32)

    def aux_loss(self, params, batch: dict) -> jax.Array:
        """Returns the attention variant's own loss on the inputs of :meth:`loss` (see :meth:`Body.aux_loss`; the
        sparse indexers' distillation loss); add it to the loss to train the indexers alongside the model.

        batch: as for :meth:`loss` -> scalar
        """
        inputs, _ = self._split(batch)
        mask = batch.get("mask")
        return self.body.aux_loss(params, self.embed(params, inputs),
                                      padding_mask=None if mask is None else mask[:, :-1])

    def _split(self, batch: dict) -> tuple[jax.Array, jax.Array]:
        tokens = batch["tokens"]
        embedding.check_tokens(tokens, self.cfg.vocab_size, 'batch["tokens"]')
        if tokens.ndim != 2 or tokens.shape[1] < 2:
            raise ValueError(f'batch["tokens"] must have shape [batch, seq + 1] with seq >= 1, got '
                             f"{tuple(tokens.shape)}.")
        return tokens[:, :-1], tokens[:, 1:]

    def loss(self, params, batch: dict) -> jax.Array:
        """Returns the mean next-token cross-entropy (nats per token) over unmasked targets.

        batch["tokens"]: [batch, seq + 1] int; optional batch["mask"]: [batch, seq + 1] bool, True for real tokens.
        Out-of-range targets raise when concrete and make the loss NaN when traced.
        """
        inputs, targets = self._split(batch)
        mask = batch.get("mask")
        logits = self.apply(params, inputs, padding_mask=None if mask is None else mask[:, :-1])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        # Traced targets cannot be checked eagerly: an out-of-range one makes the loss NaN rather than a wrong number.
        invalid = (targets < 0) | (targets >= self.cfg.vocab_size)
        if mask is not None:
            invalid = invalid & mask[:, 1:].astype(bool)
        losses = jnp.where(invalid, jnp.nan, losses)
        if mask is None:
            return jnp.mean(losses)
        weights = mask[:, 1:].astype(losses.dtype)
        return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
