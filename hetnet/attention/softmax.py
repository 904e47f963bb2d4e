"""Multi-head (optionally grouped-query) softmax attention through ``jax.nn.dot_product_attention``.

Option ``implementation`` (:class:`~hetnet.attention_options.SoftmaxOptions`): ``"auto"`` (default) takes cuDNN's fused attention where
it applies (:func:`cudnn_unsupported` lists the conditions: a GPU, bfloat16 or float16, head size a multiple of 8 up
to 128, no padding mask) and XLA's otherwise; ``"xla"`` always XLA; ``"cudnn"`` requires cuDNN and raises where it
does not apply.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hetnet.attention import projections
from hetnet.config import AttentionConfig

init = projections.init
axes = projections.axes
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def cudnn_unsupported(q: jax.Array, k: jax.Array, padding_mask, platform: str) -> list[str]:
    """Returns the reasons cuDNN's fused attention cannot run these inputs (empty when it can).

    q: [batch, seq, num_heads, head_dim]; k: [batch, seq, kv_heads, head_dim]; platform: ``jax.default_backend()``.
    """
    reasons = []
    if platform != "gpu":
        reasons.append(f"the platform is {platform!r}, not 'gpu'")
    if q.dtype not in CUDNN_DTYPES:
        reasons.append(f"the compute dtype is {q.dtype}, not bfloat16 or float16")
    head_dim = q.shape[-1]
    if head_dim % 8 or head_dim > 128:
        reasons.append(f"the head size is {head_dim}, not a multiple of 8 up to 128")
    if q.shape[2] % k.shape[2]:
        reasons.append(f"{q.shape[2]} query heads do not group over {k.shape[2]} key/value heads")
    if padding_mask is not None:
        reasons.append("a padding mask is given (cuDNN takes sequence lengths, not arbitrary masks)")
    return reasons


def select_implementation(q: jax.Array, k: jax.Array, cfg: AttentionConfig, padding_mask,
                          platform: str | None = None) -> str:
    """Returns ``"cudnn"`` or ``"xla"``: the kernel ``cfg``'s ``implementation`` option picks for these inputs.

    Raises ValueError when the option is ``"cudnn"`` and cuDNN cannot run them.
    """
    choice = cfg.options.implementation
    if choice == "xla":
        return "xla"
    reasons = cudnn_unsupported(q, k, padding_mask, platform or jax.default_backend())
    if choice == "cudnn" and reasons:
        raise ValueError("attention option implementation='cudnn' cannot run here: " + "; ".join(reasons) + ".")
    return "xla" if reasons else "cudnn"


def attend(q: jax.Array, k: jax.Array, v: jax.Array, cfg: AttentionConfig, padding_mask: jax.Array | None):
    """Returns per-head softmax attention outputs, from the kernel :func:`select_implementation` picks.

    q: [batch, seq, num_heads, head_dim]; k, v: [batch, seq, kv_heads, head_dim]; padding_mask: [batch, seq] or None
    -> [batch, seq, num_heads, head_dim]
    """
    implementation = select_implementation(q, k, cfg, padding_mask)
    mask = None if padding_mask is None else padding_mask[:, None, None, :].astype(bool)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=cfg.causal, implementation=implementation)


def apply(params, x: jax.Array, cfg: AttentionConfig, *, padding_mask: jax.Array | None = None, carry=None):
    """Returns the attention output ``y``; ``carry`` is unused (this variant reads nothing from other layers).

    x: [batch, seq, d_model]; padding_mask: [batch, seq] bool, True for real tokens (keys marked False are ignored);
    y: [batch, seq, d_model]. Outputs at padded query positions are defined but meaningless.
    """
    projections.check_padding_mask(padding_mask, x)
    q, k, v = projections.project_qkv(params, x, cfg)
    return projections.project_out(params, attend(q, k, v, cfg, padding_mask))
