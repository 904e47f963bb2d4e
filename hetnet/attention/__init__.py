"""Attention variants behind one signature.

Each variant is a module with ``init(key, cfg) -> (params, axes)`` and
``apply(params, x, cfg, *, padding_mask=None, state=None) -> (y, state)``, where ``state`` is a dict threaded through
one forward pass of a model (a variant that needs something from an earlier layer reads it there).
"""

from __future__ import annotations

from types import ModuleType

from hetnet.attention import linear, neutreno, softmax, sparse

_VARIANTS: dict[str, ModuleType] = {"softmax": softmax, "neutreno": neutreno, "linear": linear, "sparse": sparse}


def variants() -> tuple[str, ...]:
    """Returns the names of the registered attention variants."""
    return tuple(_VARIANTS)


def get(name: str) -> ModuleType:
    """Returns the attention variant module registered under ``name``."""
    if name not in _VARIANTS:
        raise ValueError(f"attention must be one of {variants()}, got {name!r}.")
    return _VARIANTS[name]


def register(name: str, module: ModuleType) -> None:
    """Registers ``module`` (with ``init`` and ``apply`` of the variant signature) as attention variant ``name``."""
    for fn in ("init", "apply"):
        if not callable(getattr(module, fn, None)):
            raise TypeError(f"attention variant {name!r} must define {fn}(); {module!r} does not.")
    _VARIANTS[name] = module


__all__ = ["variants", "get", "register"]
