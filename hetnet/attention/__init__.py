"""Attention variants behind one signature.

Each variant is a module with ``init(key, cfg) -> (params, axes)``,
``apply(params, x, cfg, *, padding_mask=None, state=None) -> (y, state)``, where ``state`` is a dict threaded through
one forward pass of a model (a variant that needs something from an earlier layer reads it there), and ``OPTIONS``,
the names of the settings it reads from ``AttentionConfig.options``; any other name is refused.
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


def check_options(name: str, options: tuple) -> None:
    """Raises ValueError when ``options`` (``(name, value)`` pairs) names a setting the variant ``name`` does not
    read, or names one twice."""
    accepted = tuple(get(name).OPTIONS)
    names = [pair[0] if isinstance(pair, tuple) and len(pair) == 2 else pair for pair in options]
    for pair in options:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ValueError(f"attention options must be (name, value) pairs, got {pair!r}.")
    unknown = [n for n in names if n not in accepted]
    if unknown:
        raise ValueError(f"attention {name!r} has no option {unknown[0]!r}; it accepts {accepted or 'none'}.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"attention option {repeated[0]!r} is given more than once.")


def register(name: str, module: ModuleType) -> None:
    """Registers ``module`` (with ``init``, ``apply`` of the variant signature and ``OPTIONS``) as variant ``name``."""
    for fn in ("init", "apply"):
        if not callable(getattr(module, fn, None)):
            raise TypeError(f"attention variant {name!r} must define {fn}(); {module!r} does not.")
    if not isinstance(getattr(module, "OPTIONS", None), tuple):
        raise TypeError(f"attention variant {name!r} must define OPTIONS, the tuple of option names it reads.")
    _VARIANTS[name] = module


__all__ = ["variants", "get", "check_options", "register"]
