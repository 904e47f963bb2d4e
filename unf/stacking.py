"""Exact layers axes: a weight space whose stacking axis is fixed, seen as one tensor per layer.

With the stacking axis fixed (``spec.fixed``), layer ``l``'s slice of a stacked leaf is a tensor of its own, and
layer ``l``'s nested groups are groups of their own (:class:`LayerGroup`). The equivariant maps of the stacked weight
space are exactly those of this unstacked one, so the fast layer runs its plan on the unstacked leaves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence

import jax
import jax.numpy as jnp

from hetnet.axes import Nested
from unf.plan import LeafLayout


@dataclasses.dataclass(frozen=True, order=True)
class LayerGroup:
    """Layer ``index``'s copy of the nested group ``name``."""

    name: Hashable
    index: int


@dataclasses.dataclass(frozen=True)
class Unstacked:
    """``layouts``: the unstacked leaves; ``pieces[i]``: ``(fixed axis or None, first unstacked leaf, count)`` for
    leaf ``i`` of the stacked weight space."""

    layouts: tuple[LeafLayout, ...]
    pieces: tuple[tuple[int | None, int, int], ...]

    def split(self, leaves: Sequence[jax.Array]) -> list[jax.Array]:
        """Returns the unstacked leaves of stacked ``leaves`` (which may carry trailing channel axes)."""
        out = []
        for leaf, (axis, _, count) in zip(leaves, self.pieces):
            out.extend([leaf] if axis is None else [jnp.take(leaf, i, axis=axis) for i in range(count)])
        return out

    def merge(self, flat: Sequence[jax.Array]) -> list[jax.Array]:
        """Returns the stacked leaves of unstacked ``flat`` leaves (the inverse of :meth:`split`)."""
        return [flat[first] if axis is None else jnp.stack(flat[first:first + count], axis=axis)
                for axis, first, count in self.pieces]


def unstack(leaf_axes: Sequence[tuple], leaf_shapes: Sequence[tuple], fixed: Sequence[Hashable]) -> Unstacked:
    """Returns the unstacked view of leaves labelled ``leaf_axes`` whose ``fixed`` axes index layers.

    A leaf may carry at most one fixed axis; its nested labels hanging from that axis become :class:`LayerGroup`s.
    """
    layouts, pieces = [], []
    for labels, shape in zip(leaf_axes, leaf_shapes):
        axes = [i for i, label in enumerate(labels) if label in fixed]
        if len(axes) > 1:
            raise ValueError(f"a leaf labelled {labels} carries {len(axes)} fixed axes; at most one is supported.")
        if not axes:
            pieces.append((None, len(layouts), 1))
            layouts.append(LeafLayout(tuple(labels), tuple(shape)))
            continue
        axis = axes[0]
        pieces.append((axis, len(layouts), shape[axis]))
        rest = tuple(shape[:axis]) + tuple(shape[axis + 1:])
        for index in range(shape[axis]):
            named = tuple(LayerGroup(l.name, index) if isinstance(l, Nested) and l.parent == labels[axis] else l
                          for k, l in enumerate(labels) if k != axis)
            layouts.append(LeafLayout(named, rest))
    return Unstacked(tuple(layouts), tuple(pieces))
