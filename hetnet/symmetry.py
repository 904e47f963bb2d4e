"""Group elements built from axis labels: one permutation per label, applied to every axis that carries it.

A :class:`~hetnet.axes.Nested` label gets one permutation per index of its parent (stacking) axis, shape
``[layers, size]``: row ``l`` acts on layer ``l``'s slice.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hetnet.axes import Label, Nested, axes_leaves, check_axes, is_axes_leaf

Permutations = dict  # dict[Label, int32 array [size], or [parent size, size] for a Nested label]


def sample_permutations(key: jax.Array, params: Any, axes: Any) -> Permutations:
    """Returns a uniformly random element of the model's symmetry group: a permutation for every permuted label in
    ``axes``, one per layer for a nested label."""
    every = check_axes(params, axes, permuted=lambda label: label is not None)
    return sample_from_sizes(key, check_axes(params, axes), every)


def sample_from_sizes(key: jax.Array, sizes: dict, parent_sizes: dict | None = None) -> Permutations:
    """Returns a uniformly random permutation of ``range(size)`` for every ``label: size``; for a nested label, one
    per index of its parent axis, whose size is read from ``parent_sizes`` (default ``sizes``).

    Labels are visited in sorted order of their ``repr`` so the same key gives the same element.
    """
    parent_sizes = sizes if parent_sizes is None else parent_sizes
    labels = sorted(sizes, key=repr)
    keys = jax.random.split(key, max(len(labels), 1))
    perms = {}
    for label, k in zip(labels, keys):
        if isinstance(label, Nested):
            if label.parent not in parent_sizes:
                raise ValueError(f"nested label {label} needs the size of its parent axis {label.parent!r}; "
                                 f"sizes name {sorted(map(repr, parent_sizes))}.")
            layer_keys = jax.random.split(k, parent_sizes[label.parent])
            perms[label] = jax.vmap(lambda kk, n=sizes[label]: jax.random.permutation(kk, n))(layer_keys)
        else:
            perms[label] = jax.random.permutation(k, sizes[label])
    return perms


def _permute_nested(x: jax.Array, axis: int, parent_axis: int, perm: jax.Array) -> jax.Array:
    """Returns ``x`` with ``axis`` reindexed by ``perm[l]`` in the slice at index ``l`` of ``parent_axis``."""
    moved = jnp.moveaxis(x, (parent_axis, axis), (0, 1))
    index = perm.reshape(perm.shape + (1,) * (moved.ndim - 2))
    return jnp.moveaxis(jnp.take_along_axis(moved, index, axis=1), (0, 1), (parent_axis, axis))


def permute_leaf(x: jax.Array, labels: tuple, perms: Permutations) -> jax.Array:
    """Returns ``x`` with each axis whose label has a permutation in ``perms`` reindexed by it.

    Nested labels act first (per layer), then plain ones, so permuting the stacking axis too (a tied layers group)
    is one consistent group action. ``x`` may carry extra trailing axes beyond ``labels`` (e.g. feature channels);
    those are left alone.
    """
    def expect(label, perm, shape):
        if tuple(jnp.shape(perm)) != shape:
            raise ValueError(f"the permutation of label {label!r} has shape {jnp.shape(perm)} but the axes it acts on "
                             f"need {shape}: the group element was made for params of another size.")

    for axis, label in enumerate(labels):
        if isinstance(label, Nested) and label in perms:
            parent_axis = labels.index(label.parent)
            expect(label, perms[label], (jnp.shape(x)[parent_axis], jnp.shape(x)[axis]))
            x = _permute_nested(x, axis, parent_axis, perms[label])
    for axis, label in enumerate(labels):
        if label is not None and not isinstance(label, Nested) and label in perms:
            expect(label, perms[label], (jnp.shape(x)[axis],))
            x = jnp.take(x, perms[label], axis=axis)
    return x


def permute(params: Any, axes: Any, perms: Permutations) -> Any:
    """Returns ``params`` acted on by the group element ``perms`` (a permutation per label)."""
    return jax.tree.map(lambda x, labels: permute_leaf(x, labels, perms), params, axes)


def invert(perms: Permutations) -> Permutations:
    """Returns the inverse group element: ``permute(permute(p, axes, perms), axes, invert(perms)) == p``."""
    inverse = {}
    for label, p in perms.items():
        inv = jnp.argsort(p, axis=-1)
        if isinstance(label, Nested) and label.parent in perms:
            # The stacking axis moves too: the inverse's row j undoes the row that landed at index j.
            inv = inv[perms[label.parent]]
        inverse[label] = inv
    return inverse


def labels_in(axes: Any) -> set[Label]:
    """Returns every non-None label used in ``axes``."""
    return {lab for leaf in axes_leaves(axes) for lab in leaf if lab is not None}


__all__ = ["Permutations", "sample_permutations", "sample_from_sizes", "permute", "permute_leaf", "invert",
           "labels_in", "is_axes_leaf"]
