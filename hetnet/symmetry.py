"""Group elements built from axis labels: one permutation per label, applied to every axis that carries it."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hetnet.axes import Label, axes_leaves, check_axes, is_axes_leaf

Permutations = dict  # dict[Label, jax.Array of int32, shape [size]]


def sample_permutations(key: jax.Array, params: Any, axes: Any) -> Permutations:
    """Returns a uniformly random permutation for every permuted label in ``axes``."""
    return sample_from_sizes(key, check_axes(params, axes))


def sample_from_sizes(key: jax.Array, sizes: dict) -> Permutations:
    """Returns a uniformly random permutation of ``range(size)`` for every ``label: size``.

    Labels are visited in sorted order of their ``repr`` so the same key gives the same element.
    """
    labels = sorted(sizes, key=repr)
    keys = jax.random.split(key, max(len(labels), 1))
    return {label: jax.random.permutation(k, sizes[label]) for label, k in zip(labels, keys)}


def permute_leaf(x: jax.Array, labels: tuple, perms: Permutations) -> jax.Array:
    """Returns ``x`` with each axis whose label has a permutation in ``perms`` reindexed by it.

    ``x`` may carry extra trailing axes beyond ``labels`` (e.g. feature channels); those are left alone.
    """
    for axis, label in enumerate(labels):
        if label is not None and label in perms:
            perm = perms[label]
            if jnp.ndim(perm) != 1 or jnp.shape(perm)[0] != jnp.shape(x)[axis]:
                raise ValueError(f"the permutation of label {label!r} has shape {jnp.shape(perm)} but the axis it "
                                 f"acts on has size {jnp.shape(x)[axis]}: the group element was made for "
                                 "params of another size.")
            x = jnp.take(x, perm, axis=axis)
    return x


def permute(params: Any, axes: Any, perms: Permutations) -> Any:
    """Returns ``params`` acted on by the group element ``perms`` (a permutation per label)."""
    return jax.tree.map(lambda x, labels: permute_leaf(x, labels, perms), params, axes)


def invert(perms: Permutations) -> Permutations:
    """Returns the inverse group element."""
    return {label: jnp.argsort(p) for label, p in perms.items()}


def labels_in(axes: Any) -> set[Label]:
    """Returns every non-None label used in ``axes``."""
    return {lab for leaf in axes_leaves(axes) for lab in leaf if lab is not None}


__all__ = ["Permutations", "sample_permutations", "sample_from_sizes", "permute", "permute_leaf", "invert", "labels_in", "is_axes_leaf"]
