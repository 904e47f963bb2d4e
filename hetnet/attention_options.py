"""Each attention variant's settings as a frozen, typed options class, checked once when a config is built.

A config takes a variant's options as its class (``SparseOptions(block=64, top_k=4)``), as ``(name, value)`` pairs
(``(("block", 64), ("top_k", 4))``, what a command line produces) or as a mapping; :func:`typed` turns any of them
into the class, so the variants read typed fields and never re-parse. The classes live here, not beside the
variants, because the configs build them and the variants read the configs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


def _check_int(variant: str, name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{variant} attention option {name} must be an int >= {minimum}, got {value!r}.")


def _check_choice(variant: str, name: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"{variant} attention option {name} must be one of {accepted}, got {value!r}.")


IMPLEMENTATIONS = ("auto", "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class SoftmaxOptions:
    """``implementation``: ``"auto"`` (cuDNN's fused kernel where it applies, else XLA's), ``"xla"`` or
    ``"cudnn"`` (raises where cuDNN cannot run)."""

    implementation: str = "auto"

    def __post_init__(self):
        _check_choice("softmax", "implementation", self.implementation, IMPLEMENTATIONS)


@dataclasses.dataclass(frozen=True)
class NeutrenoOptions:
    """``lambda_`` (named ``"lambda"`` in pairs): the weight of the fidelity term toward the first layer's values
    (0.6, the paper's DeiT setting; 0 gives softmax attention); ``implementation`` as for softmax."""

    lambda_: float = 0.6
    implementation: str = "auto"

    def __post_init__(self):
        if not isinstance(self.lambda_, (int, float)) or isinstance(self.lambda_, bool):
            raise ValueError(f"neutreno attention option lambda must be a number, got {self.lambda_!r}.")
        if not math.isfinite(self.lambda_) or self.lambda_ < 0:
            # A negative weight pushes each layer's output away from the first layer's values: the opposite term.
            raise ValueError(f"neutreno attention option lambda must be finite and >= 0 (0 gives softmax attention), "
                             f"got {self.lambda_!r}.")
        _check_choice("neutreno", "implementation", self.implementation, IMPLEMENTATIONS)


FEATURE_MAPS = ("elu", "relu", "identity")


@dataclasses.dataclass(frozen=True)
class LinearOptions:
    """``feature_map``: ``"elu"`` (elu + 1), ``"relu"`` or ``"identity"``; ``normalize``: divide by the summed
    scores (default: unless the map is the identity, whose scores can be negative); ``chunk``: positions per exact
    block of the chunked scan."""

    feature_map: str = "elu"
    normalize: bool | None = None
    chunk: int = 64

    def __post_init__(self):
        _check_choice("linear", "feature_map", self.feature_map, FEATURE_MAPS)
        if not (self.normalize is None or isinstance(self.normalize, bool)):
            raise ValueError(f"linear attention option normalize must be a bool or None, got {self.normalize!r}.")
        _check_int("linear", "chunk", self.chunk, 1)

    @property
    def normalized(self) -> bool:
        """Whether outputs are divided by the summed scores (``normalize``, or its default for the map)."""
        return self.feature_map != "identity" if self.normalize is None else self.normalize


SUMMARIES = ("mean", "none")
ROUTERS = ("mean", "indexer")


@dataclasses.dataclass(frozen=True)
class SparseOptions:
    """``block`` positions per key block; ``top_k`` routed blocks per query group; ``window`` neighbouring blocks
    always read; ``query_group`` queries sharing one routing choice (a divisor of ``block``; default ``block``);
    ``summary`` ``"mean"`` (unselected blocks still seen through their mean key) or ``"none"``; ``router``
    ``"mean"`` (score blocks by their mean key) or ``"indexer"`` (a learned indexer); ``index_dim`` the indexer's
    width per head (16 by default; only with ``router="indexer"``)."""

    block: int = 64
    top_k: int = 4
    window: int = 1
    query_group: int | None = None
    summary: str = "mean"
    router: str = "mean"
    index_dim: int | None = None

    def __post_init__(self):
        _check_int("sparse", "block", self.block, 1)
        _check_int("sparse", "top_k", self.top_k, 0)
        _check_int("sparse", "window", self.window, 0)
        if self.query_group is not None:
            _check_int("sparse", "query_group", self.query_group, 1)
            if self.block % self.query_group:
                raise ValueError(f"sparse attention option query_group must be a positive divisor of "
                                 f"block={self.block}, got {self.query_group}.")
        _check_choice("sparse", "summary", self.summary, SUMMARIES)
        _check_choice("sparse", "router", self.router, ROUTERS)
        if self.router != "indexer" and self.index_dim is not None:
            raise ValueError(f"sparse attention option index_dim sizes the learned indexer; it needs router='indexer', "
                             f"got router={self.router!r}.")
        if self.index_dim is not None:
            _check_int("sparse", "index_dim", self.index_dim, 1)

    @property
    def group_size(self) -> int:
        """Queries that share one routing choice (``query_group``, or the whole block by default)."""
        return self.block if self.query_group is None else self.query_group

    @property
    def index_width(self) -> int:
        """The learned indexer's width per head (``index_dim``, or 16 by default)."""
        return 16 if self.index_dim is None else self.index_dim


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a variant that reads none."""


#: Each variant's options class, by variant name; :func:`hetnet.attention.register` adds a new variant's.
OPTION_TYPES: dict[str, type] = {
    "softmax": SoftmaxOptions,
    "neutreno": NeutrenoOptions,
    "linear": LinearOptions,
    "sparse": SparseOptions,
}

# Pair names that are Python keywords, and the fields that hold them.
_FIELD_OF_NAME = {"lambda": "lambda_"}
_NAME_OF_FIELD = {field: name for name, field in _FIELD_OF_NAME.items()}


def option_names(variant: str) -> tuple[str, ...]:
    """Returns the option names ``variant`` accepts, as they are written in pairs."""
    return tuple(_NAME_OF_FIELD.get(f.name, f.name) for f in dataclasses.fields(option_type(variant)))


def option_type(variant: str) -> type:
    """Returns ``variant``'s options class; raises ValueError naming the registered variants otherwise."""
    if variant not in OPTION_TYPES:
        raise ValueError(f"attention must be one of {tuple(OPTION_TYPES)}, got {variant!r}.")
    return OPTION_TYPES[variant]


def typed(variant: str, options: Any) -> Any:
    """Returns ``options`` as ``variant``'s options class, checked.

    ``options`` is an instance of that class, ``None`` or ``()`` (every default), a mapping from option name to
    value, or ``(name, value)`` pairs; another variant's options class left at its defaults (what a config that
    switches variant by ``dataclasses.replace`` carries) counts as every default. Raises ValueError naming the variant and the option on an unknown or repeated
    name, a wrong value, or another variant's options class.
    """
    cls = option_type(variant)
    if isinstance(options, cls):
        return options
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        if options == type(options)():  # another variant's defaults say nothing: dataclasses.replace(cfg, variant=...)
            return cls()
        raise ValueError(f"attention {variant!r} takes {cls.__name__}, got {type(options).__name__}: set the "
                         f"variant and its options together.")
    if options is None:
        return cls()
    if isinstance(options, Mapping):
        pairs = tuple(options.items())
    elif isinstance(options, (tuple, list)):
        pairs = tuple(tuple(p) if isinstance(p, list) else p for p in options)
    else:
        raise ValueError(f"attention options must be {cls.__name__}, a mapping or (name, value) pairs, "
                         f"got {options!r}.")
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ValueError(f"attention options must be (name, value) pairs, got {pair!r}.")
    names = [name for name, _ in pairs]
    accepted = option_names(variant)
    unknown = [n for n in names if n not in accepted]
    if unknown:
        raise ValueError(f"attention {variant!r} has no option {unknown[0]!r}; it accepts {accepted or 'none'}.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"attention option {repeated[0]!r} is given more than once.")
    return cls(**{_FIELD_OF_NAME.get(name, name): value for name, value in pairs})
