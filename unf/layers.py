"""Equivariant and invariant layers over a weight space, and pointwise layers; pure ``init``/``apply``.

Features live on the weight space: a tree with the spec's structure whose leaves are ``[*leaf_shape, channels]``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hetnet import validation
from unf import plan_apply
from unf.plan import LeafLayout, Plan, build_plan
from unf.plan_apply import fold, signature_weights, unfold
from unf.spec import WeightSpaceSpec
from unf.stacking import Unstacked, unstack

REDUCTIONS = ("mean", "sum")


def _unstacked(spec: WeightSpaceSpec) -> Unstacked:
    """The leaves the plan runs on: the spec's own, or one per layer where a stacking axis is fixed."""
    return unstack(spec.leaf_axes, spec.leaf_shapes, spec.fixed)


def _check_features(spec: WeightSpaceSpec, x: Any, c_in: int, name: str = "x") -> list:
    leaves = spec.leaves(x, name)
    for leaf, shape, leaf_name in zip(leaves, spec.leaf_shapes, spec.leaf_names):
        if tuple(leaf.shape) != tuple(shape) + (c_in,):
            raise ValueError(
                f"{name}{leaf_name} has shape {tuple(leaf.shape)}; expected {tuple(shape) + (c_in,)} "
                f"(the leaf's shape plus {c_in} channels)."
            )
    return leaves


def _init_weights(key: jax.Array, plan: Plan) -> list:
    """Returns one weight matrix per matmul group: normal(0, 1 / fan_in of the output leaf), bias rows zero.

    One normal draw of the total size is split up: a separate draw per matrix would compile one random-bits program
    each, which dominates compile time for weight spaces with many leaves.
    """
    fan_in = [
        sum(c.rows[1] - c.rows[0] for sig in sigs for c in sig.contributions if c.reduction >= 0)
        for sigs in plan.signatures
    ]
    shapes, scales = [], []
    for grp in plan.groups:
        scale = np.zeros((grp.num_rows, grp.num_cols), np.float32)
        for o, _, c0, c1 in grp.members:
            scale[:, c0:c1] = 1.0 / np.sqrt(max(fan_in[o], 1))
        for c in grp.contributions:
            if c.reduction < 0:
                scale[c.rows[0] : c.rows[1]] = 0.0
        shapes.append(scale.shape)
        scales.append(scale)
    sizes = [r * c for r, c in shapes]
    draws = jnp.split(jax.random.normal(key, (sum(sizes),), jnp.float32), np.cumsum(sizes)[:-1]) if sizes else []
    return [d.reshape(shape) * scale for d, shape, scale in zip(draws, shapes, scales)]


def _jitted_init(plan: Plan) -> Callable[[jax.Array], dict]:
    # One compiled init per layer: eagerly, every distinct weight shape would compile its own small program.
    return jax.jit(lambda key: {"weights": _init_weights(key, plan)})


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")


def _check_channels(**channels: int) -> None:
    for name, value in channels.items():
        validation.positive_int(name, value)


#: Past this many weights a layer is refused: its cost comes from unpermuted axes, one coefficient per index pair.
MAX_WEIGHTS = 20_000_000


def num_weights(plan: Plan) -> int:
    """Returns the number of weights of a layer with this plan (its matmul groups' matrices)."""
    return sum(grp.num_rows * grp.num_cols for grp in plan.groups)


def _check_weight_count(spec: WeightSpaceSpec, plan: Plan) -> None:
    count = num_weights(plan)
    if count <= MAX_WEIGHTS:
        return
    unpermuted = sorted(((n, name, axis) for labels, shape, name in zip(spec.leaf_axes, spec.leaf_shapes,
                                                                         spec.leaf_names)
                         for axis, (label, n) in enumerate(zip(labels, shape)) if label is None), reverse=True)
    listed = ", ".join(f"{name} axis {axis} (size {n})" for n, name, axis in unpermuted[:4])
    raise ValueError(
        f"this equivariant layer would hold {count:,} weights (limit {MAX_WEIGHTS:,}): every pair of positions on "
        f"unpermuted axes gets its own coefficient, and the largest such axes are {listed}. Treat them as groups "
        "of their own with unf.spec.unpermuted_as_groups(spec) (sizes then do not matter; the learned optimizers "
        "do this by default), or label them with a group the model really has.")


def _attach_plan(layer, out_layouts: tuple[LeafLayout, ...] | None, c_out: int) -> None:
    """Checks a frozen layer's settings and stores its plan (output layouts default to the input's) and compiled
    init on it."""
    _check_reduction(layer.reduction)
    view = _unstacked(layer.spec)
    plan = build_plan(view.layouts, view.layouts if out_layouts is None else out_layouts, layer.c_in, c_out)
    _check_weight_count(layer.spec, plan)
    object.__setattr__(layer, "plan", plan)
    object.__setattr__(layer, "_view", view)
    object.__setattr__(layer, "_init", _jitted_init(plan))


@dataclasses.dataclass(frozen=True)
class EquivariantLinear:
    """The complete equivariant linear map from features on ``spec`` (``c_in`` channels) to ``c_out`` channels.

    Every output leaf receives every basis term from every input leaf, each mixed by its own ``[c_in, c_out]`` matrix
    (``None`` axes widen it), plus the complete equivariant bias. x, y: trees like the params, leaves
    ``[*leaf_shape, c]``. A fixed stacking axis (``spec.fixed``, the exact layers mode) gives every layer its own
    terms; a permuted one (tied) shares them across layers, so the params fit any depth.
    """

    spec: WeightSpaceSpec
    c_in: int
    c_out: int
    reduction: str = "mean"
    plan: Plan = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_channels(c_in=self.c_in, c_out=self.c_out)
        _attach_plan(self, None, self.c_out)

    @property
    def num_terms(self) -> int:
        return self.plan.num_terms

    def init(self, key: jax.Array) -> dict:
        """Returns ``{"weights": [W per matmul group]}``; :func:`signature_weights` gives per-signature views."""
        return self._init(key)

    def apply(self, params: dict, x: Any) -> Any:
        """Returns the layer's output features: same tree as ``x``, leaves ``[*leaf_shape, c_out]``."""
        xs = self._view.split(_check_features(self.spec, x, self.c_in))
        return self.spec.unflatten(self._view.merge(plan_apply.apply_plan(self.plan, params["weights"], xs,
                                                                          self.reduction)))

    def apply_term_by_term(self, params: dict, x: Any) -> Any:
        """Returns what :meth:`apply` returns, one basis term at a time: the slow reference (tests, benchmarks)."""
        xs = self._view.split(_check_features(self.spec, x, self.c_in))
        return self.spec.unflatten(self._view.merge(plan_apply.apply_term_by_term(self.plan, params["weights"], xs,
                                                                                  self.reduction)))



@dataclasses.dataclass(frozen=True)
class InvariantLinear:
    """An invariant map from features on ``spec`` to ``out_features`` numbers: every invariant pooling of every
    leaf (means over each grouping of its permuted axes, ``None`` axes kept as channels), then a dense head."""

    spec: WeightSpaceSpec
    c_in: int
    out_features: int
    reduction: str = "mean"
    plan: Plan = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_channels(c_in=self.c_in, out_features=self.out_features)
        _attach_plan(self, (LeafLayout((), ()),), self.out_features)

    def init(self, key: jax.Array) -> dict:
        """Returns ``{"weights": [W]}``: one matrix over every leaf's pooled features (plus a bias row)."""
        return self._init(key)

    def apply(self, params: dict, x: Any) -> jax.Array:
        """Returns ``[out_features]``."""
        xs = self._view.split(_check_features(self.spec, x, self.c_in))
        return plan_apply.apply_plan(self.plan, params["weights"], xs, self.reduction)[0]


@dataclasses.dataclass(frozen=True)
class PointwiseLinear:
    """One ``[c_in, c_out]`` matrix and bias applied to the channels at every position of every leaf."""

    c_in: int
    c_out: int

    def __post_init__(self):
        _check_channels(c_in=self.c_in, c_out=self.c_out)

    def init(self, key: jax.Array) -> dict:
        w = jax.random.normal(key, (self.c_in, self.c_out), jnp.float32) / np.sqrt(self.c_in)
        return {"w": w, "b": jnp.zeros((self.c_out,), jnp.float32)}

    def apply(self, params: dict, x: Any) -> Any:
        def one(leaf):
            if leaf.shape[-1] != self.c_in:
                raise ValueError(f"pointwise input has {leaf.shape[-1]} channels; expected {self.c_in}.")
            lead = tuple(range(leaf.ndim - 1))
            return leaf @ params["w"].astype(leaf.dtype) + jnp.expand_dims(params["b"].astype(leaf.dtype), lead)

        return jax.tree.map(one, x)


@functools.lru_cache(maxsize=64)
def cached_equivariant(spec: WeightSpaceSpec, c_in: int, c_out: int, reduction: str = "mean") -> EquivariantLinear:
    """Returns the :class:`EquivariantLinear` for these settings, built once: its plan is static, so callers that
    rebuild a layer on every trace (optimizers, linen modules) share one."""
    return EquivariantLinear(spec, c_in, c_out, reduction)


@functools.lru_cache(maxsize=64)
def cached_invariant(spec: WeightSpaceSpec, c_in: int, out_features: int, reduction: str = "mean") -> InvariantLinear:
    """Returns the :class:`InvariantLinear` for these settings, built once."""
    return InvariantLinear(spec, c_in, out_features, reduction)


def pointwise(fn: Callable[[jax.Array], jax.Array], x: Any) -> Any:
    """Returns ``fn`` applied to every leaf of ``x`` (a pointwise nonlinearity such as ``jax.nn.relu``)."""
    return jax.tree.map(fn, x)


__all__ = ["EquivariantLinear", "InvariantLinear", "PointwiseLinear", "cached_equivariant", "cached_invariant", "fold",
           "pointwise", "signature_weights", "unfold"]
