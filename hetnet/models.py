"""Models as pairs of pure functions: ``TransformerLM`` (next-token) and ``SequenceClassifier``.

Each is a :class:`Model`, a NamedTuple of ``init(key, cfg) -> (params, axes)`` and ``apply(params, inputs, cfg, ...)``,
so ``jit``, ``vmap`` and ``grad`` apply to them directly.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from hetnet import attention, axes as axes_lib, blocks, embedding, hyperset, norms
from hetnet.config import ClassifierConfig, TransformerConfig


class Model(NamedTuple):
    """``init(key, cfg) -> (params, axes)`` and ``apply(params, inputs, cfg, *, padding_mask=None) -> outputs``."""

    init: Callable[..., tuple[Any, Any]]
    apply: Callable[..., jax.Array]


def _dtype(cfg: TransformerConfig):
    return jnp.dtype(cfg.dtype)


def init_body(key: jax.Array, cfg: TransformerConfig):
    """Returns ``(params, axes)`` of positions, the blocks and a final norm.

    ``cfg.block == "standard"``: ``blocks`` is a list of ``num_layers`` blocks (labels scoped ``blocks/i``);
    ``"recurrent"``: ``shared_block`` is one block; ``"hyperset"``: ``hyperset`` is the Hyper-SET layer.
    """
    attention.get(cfg.attention)
    # A shared body draws a fixed number of keys, so its params do not depend on num_layers.
    shared = cfg.block != "standard"
    k_pos, *k_blocks = jax.random.split(key, 2 if shared else cfg.num_layers + 1)
    k_shared = k_blocks[0]
    pos, pos_axes = embedding.init_positions(k_pos, cfg.max_len, cfg.d_model)
    norm, norm_axes = norms.init(key, cfg.norm_config)
    params = {"positions": pos, "final_norm": norm}
    axes = {"positions": pos_axes, "final_norm": norm_axes}
    if cfg.block == "standard":
        params["blocks"], axes["blocks"] = [], []
        for i, k in enumerate(k_blocks):
            p, a = blocks.init(k, cfg)
            params["blocks"].append(p)
            axes["blocks"].append(axes_lib.scope(a, f"blocks/{i}"))
    elif cfg.block == "recurrent":
        params["shared_block"], shared_axes = blocks.init(k_shared, cfg)
        axes["shared_block"] = axes_lib.scope(shared_axes, "shared")
    else:
        params["hyperset"], axes["hyperset"] = hyperset.init(k_shared, cfg)
    return params, axes


def residual_states(params, x: jax.Array, cfg: TransformerConfig, *, padding_mask=None) -> list[jax.Array]:
    """Returns the residual stream after the positions and after every block of a standard body (for probing).

    x: [batch, seq, d_model] embedded inputs -> ``num_layers + 1`` arrays [batch, seq, d_model], before the final norm
    """
    if cfg.block != "standard":
        raise ValueError(f"residual_states reads a standard body's blocks; this config's block is {cfg.block!r}.")
    x = embedding.add_positions(params["positions"], x)
    states, state = [x], {}
    for block in params["blocks"]:
        x, state = blocks.apply(block, x, cfg, padding_mask=padding_mask, state=state)
        states.append(x)
    return states


def apply_body(params, x: jax.Array, cfg: TransformerConfig, *, padding_mask=None) -> jax.Array:
    """Returns the final-normed residual stream after adding positions and running the body.

    x: [batch, seq, d_model] embedded inputs; padding_mask: [batch, seq] bool or None -> [batch, seq, d_model]
    """
    if padding_mask is not None and tuple(padding_mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"padding_mask must have shape [batch, seq] = {tuple(x.shape[:2])}, got "
                         f"{tuple(padding_mask.shape)}.")
    if cfg.block == "standard":
        x = residual_states(params, x, cfg, padding_mask=padding_mask)[-1]
        return norms.apply(params["final_norm"], x, cfg.norm_config)
    x = embedding.add_positions(params["positions"], x)
    state: dict = {}
    if cfg.block == "recurrent":
        for _ in range(cfg.num_layers):
            x, state = blocks.apply(params["shared_block"], x, cfg, padding_mask=padding_mask, state=state)
    else:
        x, _ = hyperset.iterate(params["hyperset"], x, cfg, padding_mask=padding_mask)
    return norms.apply(params["final_norm"], x, cfg.norm_config)


def _lm_init(key: jax.Array, cfg: TransformerConfig):
    k_tok, k_body, k_out = jax.random.split(key, 3)
    params, axes = init_body(k_body, cfg)
    params["tokens"], axes["tokens"] = embedding.init_tokens(k_tok, cfg.vocab_size, cfg.d_model)
    params["unembed"], axes["unembed"] = embedding.init_dense(k_out, cfg.d_model, cfg.vocab_size, "embed", "vocab")
    return params, axes


def _lm_apply(params, tokens: jax.Array, cfg: TransformerConfig, *, padding_mask=None) -> jax.Array:
    """Returns next-token logits.

    tokens: [batch, seq] int in [0, vocab_size); padding_mask: [batch, seq] bool or None -> [batch, seq, vocab_size]
    """
    embedding.check_tokens(tokens, cfg.vocab_size)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape [batch, seq], got shape {tuple(tokens.shape)}.")
    x = embedding.embed_tokens(params["tokens"], tokens, _dtype(cfg))
    h = apply_body(params, x, cfg, padding_mask=padding_mask)
    return (h @ params["unembed"].astype(h.dtype)).astype(jnp.float32)


TransformerLM = Model(_lm_init, _lm_apply)


def _classifier_init(key: jax.Array, cfg: ClassifierConfig):
    body_cfg = cfg.backbone
    k_in, k_body, k_head = jax.random.split(key, 3)
    params, axes = init_body(k_body, body_cfg)
    if cfg.input_dim is None:
        params["tokens"], axes["tokens"] = embedding.init_tokens(k_in, body_cfg.vocab_size, body_cfg.d_model)
    else:
        params["inputs"], axes["inputs"] = embedding.init_dense(k_in, cfg.input_dim, body_cfg.d_model, None, "embed")
    params["head"], axes["head"] = embedding.init_dense(k_head, body_cfg.d_model, cfg.num_classes, "embed", "classes")
    return params, axes


def _classifier_apply(params, inputs: jax.Array, cfg: ClassifierConfig, *, padding_mask=None) -> jax.Array:
    """Returns class logits from the mean of the final states over real (unpadded) positions.

    inputs: [batch, seq] tokens, or [batch, seq, input_dim] features when ``cfg.input_dim`` is set;
    padding_mask: [batch, seq] bool or None -> [batch, num_classes]
    """
    body_cfg = cfg.backbone
    dtype = _dtype(body_cfg)
    if cfg.input_dim is None:
        embedding.check_tokens(inputs, body_cfg.vocab_size, "inputs")
        x = embedding.embed_tokens(params["tokens"], inputs, dtype)
    else:
        if inputs.ndim != 3 or inputs.shape[-1] != cfg.input_dim:
            raise ValueError(
                f"inputs must have shape [batch, seq, input_dim={cfg.input_dim}], got {tuple(inputs.shape)}."
            )
        x = inputs.astype(dtype) @ params["inputs"].astype(dtype)
    h = apply_body(params, x, body_cfg, padding_mask=padding_mask)
    if padding_mask is None:
        pooled = jnp.mean(h, axis=1)
    else:
        weights = padding_mask.astype(h.dtype)[..., None]
        pooled = jnp.sum(h * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1)
    return (pooled @ params["head"].astype(h.dtype)).astype(jnp.float32)


SequenceClassifier = Model(_classifier_init, _classifier_apply)
