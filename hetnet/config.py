"""Frozen configs for hetnet layers and models; each checks itself and names the field to fix."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hetnet import validation
from hetnet.attention_options import SoftmaxOptions, typed as typed_options

NORM_KINDS = ("rms", "layer")
FFN_KINDS = ("gelu", "relu", "swiglu")
DTYPES = ("float32", "bfloat16", "float16")
BLOCK_KINDS = ("standard", "recurrent", "hyperset")
POSITION_KINDS = ("learned", "rope")
REMAT_POLICIES = ("none", "dots", "full")


def _positive(config: Any, name: str) -> None:
    """Checks ``config.name`` is a positive integer and stores it as a Python int (a NumPy integer would not
    survive the config's JSON round trip)."""
    object.__setattr__(config, name, validation.positive_int(name, getattr(config, name)))


def _one_of(name: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"{name} must be one of {accepted}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class NormConfig:
    """RMSNorm (``kind="rms"``) or LayerNorm (``kind="layer"``) over ``d_model`` features."""

    d_model: int
    kind: str = "rms"
    eps: float = 1e-6

    def __post_init__(self):
        _positive(self, "d_model")
        _one_of("norm kind", self.kind, NORM_KINDS)
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps < math.inf:
            raise ValueError(f"norm eps must be a finite number > 0 (it keeps the division defined), got {self.eps!r}.")


@dataclasses.dataclass(frozen=True)
class FeedForwardConfig:
    """Position-wise feed-forward: GELU or ReLU MLP, or SwiGLU, ``d_model -> d_ff -> d_model``, no biases."""

    d_model: int
    d_ff: int
    kind: str = "gelu"

    def __post_init__(self):
        _positive(self, "d_model")
        _positive(self, "d_ff")
        _one_of("ffn kind", self.kind, FFN_KINDS)


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """Multi-head attention; ``num_kv_heads < num_heads`` gives grouped-query attention.

    ``variant`` names the attention implementation in :mod:`hetnet.attention`; ``options`` holds that variant's
    own settings: its options class from :mod:`hetnet.attention_options` (e.g. ``SparseOptions(block=64)``), or
    ``(name, value)`` pairs or a mapping, which the config turns into that class and checks when it is built. With
    ``rope_base`` set, queries and keys carry rotary positions of that base (:func:`hetnet.embedding.rotate`).
    """

    d_model: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    causal: bool = True
    variant: str = "softmax"
    options: Any = ()
    rope_base: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "options", typed_options(self.variant, self.options))
        _positive(self, "d_model")
        _positive(self, "num_heads")
        if not isinstance(self.causal, bool):
            raise TypeError(f"causal must be a bool (True: each position attends to earlier ones only), got "
                            f"{self.causal!r}.")
        if self.rope_base is not None and not (isinstance(self.rope_base, (int, float))
                                               and not isinstance(self.rope_base, bool)
                                               and 1 < self.rope_base < math.inf):
            raise ValueError(f"rope_base must be a finite number > 1 (or None for no rotary positions), got "
                             f"{self.rope_base!r}.")
        if self.num_kv_heads is not None:
            _positive(self, "num_kv_heads")
            if self.num_heads % self.num_kv_heads:
                raise ValueError(
                    f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads}) "
                    "for grouped-query attention."
                )
        if self.head_dim is None:
            if self.d_model % self.num_heads:
                raise ValueError(
                    f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads}), "
                    "or set head_dim explicitly."
                )
        else:
            _positive(self, "head_dim")
        if self.rope_base is not None and self.dim_per_head % 2:
            raise ValueError(f"rotary positions rotate feature pairs; the head size must be even, got "
                             f"{self.dim_per_head}.")

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def q_per_kv(self) -> int:
        return self.num_heads // self.kv_heads

    @property
    def dim_per_head(self) -> int:
        return self.d_model // self.num_heads if self.head_dim is None else self.head_dim


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """A pre-norm transformer: token (or feature) embedding, ``num_layers`` residual blocks, final norm, head.

    ``attention`` names the attention variant (see :func:`hetnet.attention.variants`); ``attention_options`` are
    that variant's settings: its options class, ``(name, value)`` pairs or a mapping (see :class:`AttentionConfig`). ``dtype`` is the compute dtype; params stay float32.

    ``block`` picks the body: ``"standard"`` (``num_layers`` blocks with their own weights), ``"recurrent"`` (one
    block applied ``num_layers`` times) or ``"hyperset"`` (the Hyper-SET layer of :mod:`hetnet.hyperset`, iterated
    ``num_layers`` times, with ``num_heads`` subspaces and a dictionary of ``d_ff`` atoms). In the last two the
    params do not depend on ``num_layers``, so the same params run at any depth.

    ``positions`` is ``"learned"`` (a learned absolute table of ``max_len`` rows added to the embeddings) or
    ``"rope"`` (rotary positions of base ``rope_base`` in every attention layer; no position params, and any
    length runs).

    ``remat`` says what each scanned block keeps for the backward pass (``jax.checkpoint`` per layer): ``"dots"``
    keeps the outputs of its weight matmuls and recomputes the rest (attention probabilities, activations), which
    is as fast as unrolled layers and uses less memory; ``"full"`` keeps only the block's input; ``"none"`` keeps
    everything.
    """

    vocab_size: int = 256
    d_model: int = 64
    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    num_layers: int = 2
    max_len: int = 128
    norm: str = "rms"
    ffn: str = "gelu"
    attention: str = "softmax"
    attention_options: Any = ()
    causal: bool = True
    dtype: str = "float32"
    block: str = "standard"
    remat: str = "dots"
    positions: str = "learned"
    rope_base: float = 10000.0

    def __post_init__(self):
        object.__setattr__(self, "attention_options", typed_options(self.attention, self.attention_options))
        for name in ("vocab_size", "d_model", "num_heads", "num_layers", "max_len"):
            _positive(self, name)
        for name in ("num_kv_heads", "head_dim", "d_ff"):
            if getattr(self, name) is not None:
                _positive(self, name)
        _one_of("dtype", self.dtype, DTYPES)
        _one_of("block", self.block, BLOCK_KINDS)
        _one_of("remat", self.remat, REMAT_POLICIES)
        _one_of("positions", self.positions, POSITION_KINDS)
        if self.block == "hyperset" and self.positions != "learned":
            raise ValueError(f"block='hyperset' reads learned positions; got positions={self.positions!r}.")
        if self.block == "hyperset" and (self.attention != "softmax"
                                       or self.attention_options != SoftmaxOptions()):
            raise ValueError(
                f"block='hyperset' brings its own attention step; leave attention at 'softmax' with no options "
                f"(got attention={self.attention!r}, attention_options={self.attention_options!r})."
            )
        # Building the sub-configs runs their checks now, at construction, rather than at the first apply.
        self.attention_config, self.ffn_config, self.norm_config  # noqa: B018

    @property
    def attention_config(self) -> AttentionConfig:
        return AttentionConfig(
            d_model=self.d_model,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            causal=self.causal,
            variant=self.attention,
            options=self.attention_options,
            rope_base=self.rope_base if self.positions == "rope" else None,
        )

    @property
    def ffn_config(self) -> FeedForwardConfig:
        return FeedForwardConfig(self.d_model, 4 * self.d_model if self.d_ff is None else self.d_ff, self.ffn)

    @property
    def norm_config(self) -> NormConfig:
        return NormConfig(self.d_model, self.norm)


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """A sequence classifier: a non-causal transformer body, mean pooling over real tokens, a linear head.

    With ``input_dim`` set the inputs are features ``[batch, seq, input_dim]`` (e.g. image patches) projected into
    the residual stream; otherwise they are tokens ``[batch, seq]`` below ``backbone.vocab_size``.
    """

    backbone: TransformerConfig
    num_classes: int
    input_dim: int | None = None

    def __post_init__(self):
        _positive(self, "num_classes")
        if self.input_dim is not None:
            _positive(self, "input_dim")
