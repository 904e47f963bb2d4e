"""Attention variants behind one signature, and :class:`Attention`, the layer bound to its config.

Each variant is a module with ``init(key, cfg) -> params``, ``axes(cfg) -> axes``,
``apply(params, x, cfg, *, padding_mask=None, carry=None) -> y`` and ``OPTIONS``, the names of the settings it reads
from ``AttentionConfig.options`` (any other name is refused). A variant that reads a value made by the first layer
(NeuTRENO) also defines ``first_carry(params, x, cfg)``, returning that value as a typed carry that the body creates
before running its layers and hands to every layer.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

import jax

from hetnet.attention import linear, neutreno, softmax, sparse
from hetnet.config import ATTENTION_OPTIONS, AttentionConfig, check_attention_options

_VARIANTS: dict[str, ModuleType] = {"softmax": softmax, "neutreno": neutreno, "linear": linear, "sparse": sparse}


def variants() -> tuple[str, ...]:
    """Returns the names of the registered attention variants."""
    return tuple(_VARIANTS)


def get(name: str) -> ModuleType:
    """Returns the attention variant module registered under ``name``."""
    if name not in _VARIANTS:
        raise ValueError(f"attention must be one of {variants()}, got {name!r}.")
    return _VARIANTS[name]


def check_options(name: str, options: tuple) -> None:
    """Raises ValueError when ``options`` names a setting the variant ``name`` does not read, or names one twice
    (:func:`hetnet.config.check_attention_options`)."""
    check_attention_options(name, options)


def register(name: str, module: ModuleType) -> None:
    """Registers ``module`` (with ``init``, ``axes``, ``apply`` of the variant signature and ``OPTIONS``) as
    variant ``name``."""
    for fn in ("init", "axes", "apply"):
        if not callable(getattr(module, fn, None)):
            raise TypeError(f"attention variant {name!r} must define {fn}(); {module!r} does not.")
    if not isinstance(getattr(module, "OPTIONS", None), tuple):
        raise TypeError(f"attention variant {name!r} must define OPTIONS, the tuple of option names it reads.")
    _VARIANTS[name] = module
    ATTENTION_OPTIONS[name] = tuple(module.OPTIONS)


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
