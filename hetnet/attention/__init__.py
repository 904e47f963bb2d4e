"""Attention variants behind one signature, and :class:`Attention`, the layer bound to its config.

Each variant is a module with ``init(key, cfg) -> params``, ``axes(cfg) -> axes`` and
``apply(params, x, cfg, *, padding_mask=None, carry=None) -> y``, and reads its settings from ``cfg.options``, an
instance of its options class (:mod:`hetnet.attention_options`), checked when the config was built. A variant
that trains part of itself apart from the model's loss (the sparse variant's learned indexer) also defines
``aux_loss(params, x, cfg, *, padding_mask=None) -> scalar``, which the body averages over layers (and
``has_aux_loss(cfg)`` where only some of its configs have one). A variant that reads a value made by the first layer
(NeuTRENO) also defines ``first_carry(params, x, cfg)``, returning that value as a typed carry that the body creates
before running its layers and hands to every layer.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

import jax

from hetnet.attention import linear, neutreno, softmax, sparse
from hetnet.attention_options import OPTION_TYPES, NoOptions, typed
from hetnet.config import AttentionConfig

_VARIANTS: dict[str, ModuleType] = {"softmax": softmax, "neutreno": neutreno, "linear": linear, "sparse": sparse}


def variants() -> tuple[str, ...]:
    """Returns the names of the registered attention variants."""
    return tuple(_VARIANTS)


def get(name: str) -> ModuleType:
    """Returns the attention variant module registered under ``name``."""
    if name not in _VARIANTS:
        raise ValueError(f"attention must be one of {variants()}, got {name!r}.")
    return _VARIANTS[name]


def check_options(name: str, options: Any) -> Any:
    """Returns ``options`` as variant ``name``'s options class; raises ValueError on an unknown or repeated name or
    a wrong value (:func:`hetnet.attention_options.typed`)."""
    return typed(name, options)


def register(name: str, module: ModuleType, options: type = NoOptions) -> None:
    """Registers ``module`` (with ``init``, ``axes``, ``apply`` of the variant signature) as variant ``name``,
    its settings read from ``cfg.options``, an instance of ``options`` (a frozen dataclass whose defaults all
    hold)."""
    for fn in ("init", "axes", "apply"):
        if not callable(getattr(module, fn, None)):
            raise TypeError(f"attention variant {name!r} must define {fn}(); {module!r} does not.")
    if not (dataclasses.is_dataclass(options) and isinstance(options, type)
            and options.__dataclass_params__.frozen):
        raise TypeError(f"attention variant {name!r}: options must be a frozen dataclass type, got {options!r}.")
    _VARIANTS[name] = module
    OPTION_TYPES[name] = options


@dataclasses.dataclass(frozen=True)
class Attention:
    """The attention layer of ``cfg.variant``, bound to ``cfg``: ``init(key) -> params``, ``axes``, and
    ``apply(params, x, *, padding_mask=None, carry=None) -> y``."""

    cfg: AttentionConfig

    def __post_init__(self):
        get(self.cfg.variant)

    @property
    def variant(self) -> ModuleType:
        return get(self.cfg.variant)

    @property
    def has_aux_loss(self) -> bool:
        """Whether the variant trains part of itself by a loss of its own (see :meth:`aux_loss`)."""
        applies = getattr(self.variant, "has_aux_loss", lambda cfg: True)
        return callable(getattr(self.variant, "aux_loss", None)) and applies(self.cfg)

    def aux_loss(self, params, x: jax.Array, *, padding_mask: jax.Array | None = None) -> jax.Array:
        """Returns the variant's own loss at this layer (for the sparse variant with a learned indexer, its
        distillation loss toward dense attention); raises ValueError when the variant has none.

        x: [batch, seq, d_model], the layer's attention input; padding_mask: [batch, seq] bool or None -> scalar
        """
        if not self.has_aux_loss:
            raise ValueError(f"attention {self.cfg.variant!r} with {self.cfg.options} has no loss of its own.")
        return self.variant.aux_loss(params, x, self.cfg, padding_mask=padding_mask)

    @property
    def needs_carry(self) -> bool:
        """Whether every layer reads a value the first layer makes (see :meth:`first_carry`)."""
        return callable(getattr(self.variant, "first_carry", None))

    def init(self, key: jax.Array) -> dict:
        """Returns the variant's params (arrays only)."""
        return self.variant.init(key, self.cfg)

    @property
    def axes(self) -> dict:
        return self.variant.axes(self.cfg)

    def first_carry(self, params, x: jax.Array) -> Any:
        """Returns the value the first layer hands to every layer (None when the variant needs none).

        x: [batch, seq, d_model], the first attention layer's input
        """
        return self.variant.first_carry(params, x, self.cfg) if self.needs_carry else None

    def apply(self, params, x: jax.Array, *, padding_mask: jax.Array | None = None, carry: Any = None) -> jax.Array:
        """Returns the attention output.

        x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None (True marks real tokens) -> same as x
        """
        return self.variant.apply(params, x, self.cfg, padding_mask=padding_mask, carry=carry)


__all__ = ["Attention", "variants", "get", "check_options", "register"]
