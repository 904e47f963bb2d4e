"""Axis labels: one label per parameter axis, naming the permutation group that acts on it.

A hetnet model's ``init(key)`` returns its params and its ``axes`` property their labels: ``axes`` has the
structure of ``params``, and each of its leaves is a
tuple with one entry per array axis:

- a label in :data:`SHARED_LABELS` (the residual stream ``"embed"``) names one group shared by every layer;
- a label in :data:`UNPERMUTED_LABELS` (``"vocab"``, ``"pos"``, ``"classes"``) names an axis that sharding rules may
  refer to but that no permutation acts on: permuting it would change the network's function;
- ``None`` is an axis that is neither permuted nor named;
- a label starting with :data:`MODEL_PREFIX` (``"model/v_dim"``) is one group across every layer, for layers
  whose math ties them together (NeuTRENO subtracts layer 0's values from every layer's);
- any other label is local to the layer that made it. :func:`scope` prefixes it with the layer's path
  (``"shared/mlp"``); :func:`stack` gives the leaves of layers stacked along a leading ``"layers"`` axis a
  :class:`Nested` label (``Nested("blocks/mlp", "layers")``): one permutation of the group for each layer index,
  drawn independently, so two layers' hidden units still move independently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import Any

import jax
import numpy as np

Label = Hashable
Axes = tuple  # tuple[Label | None, ...], one entry per array axis

SHARED_LABELS = frozenset({"embed"})
LAYERS = "layers"
UNPERMUTED_LABELS = frozenset({"vocab", "pos", "classes", "batch", "seq", LAYERS})
SCOPE_SEPARATOR = "/"
MODEL_PREFIX = "model/"


@dataclasses.dataclass(frozen=True, order=True)
class Nested:
    """A per-layer group of stacked layers: the axis labelled ``parent`` in the same array indexes the layer, and
    each layer index has its own, independent permutation of this axis.

    name: the group's name (``"blocks/mlp"``); parent: the label of the stacking axis (``"layers"``).
    """

    name: str
    parent: Hashable = LAYERS

    def __str__(self) -> str:
        return f"{self.parent}>{self.name}"


def is_axes_leaf(node: Any) -> bool:
    """Returns whether ``node`` is one leaf of an axes tree: a tuple of labels (hashable non-containers, or None)."""
    return isinstance(node, tuple) and all(
        e is None or (isinstance(e, Hashable) and not isinstance(e, (tuple, list, dict))) for e in node
    )


def axes_leaves(axes: Any) -> list[Axes]:
    """Returns the axes tuples of ``axes`` in the order ``jax.tree.leaves`` visits the matching params."""
    return jax.tree.leaves(axes, is_leaf=is_axes_leaf)


def map_labels(fn, axes: Any) -> Any:
    """Returns ``axes`` with every non-None label replaced by ``fn(label)``."""
    return jax.tree.map(
        lambda leaf: tuple(None if lab is None else fn(lab) for lab in leaf), axes, is_leaf=is_axes_leaf
    )


def scope(axes: Any, prefix: str) -> Any:
    """Returns ``axes`` with every layer-local label prefixed by ``prefix``; shared and unpermuted labels are kept."""

    def scoped(label: Label) -> Label:
        if label in SHARED_LABELS or label in UNPERMUTED_LABELS:
            return label
        if isinstance(label, str) and label.startswith(MODEL_PREFIX):
            return label
        return f"{prefix}{SCOPE_SEPARATOR}{label}"

    return map_labels(scoped, axes)


def is_layer_local(label: Label) -> bool:
    """Returns whether ``label`` names a group that belongs to one layer (not shared, unpermuted or model-wide)."""
    if label in SHARED_LABELS or label in UNPERMUTED_LABELS or isinstance(label, Nested):
        return False
    return not (isinstance(label, str) and label.startswith(MODEL_PREFIX))


def stack(axes: Any, prefix: str, parent: Label = LAYERS) -> Any:
    """Returns the axes of layers stacked along a new leading axis labelled ``parent``: every layer-local label
    becomes ``Nested(f"{prefix}/{label}", parent)``; shared, unpermuted and model-wide labels are kept."""

    def nested(leaf: Axes) -> Axes:
        return (parent,) + tuple(
            Nested(f"{prefix}{SCOPE_SEPARATOR}{lab}", parent) if lab is not None and is_layer_local(lab) else lab
            for lab in leaf
        )

    return jax.tree.map(nested, axes, is_leaf=is_axes_leaf)


def base_label(label: Label) -> Label:
    """Returns the layer-independent part of a label: ``"shared/mlp" -> "mlp"``, ``Nested("blocks/mlp") -> "mlp"``."""
    if isinstance(label, Nested):
        return base_label(label.name)
    if isinstance(label, str):
        return label.rsplit(SCOPE_SEPARATOR, 1)[-1]
    return label


def is_permuted(label: Label | None) -> bool:
    """Returns whether a permutation group acts on axes carrying ``label``."""
    return label is not None and label not in UNPERMUTED_LABELS


def _path_name(path) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def check_axes(params: Any, axes: Any, permuted=is_permuted) -> dict[Label, int]:
    """Returns the size of every label for which ``permuted(label)`` holds, after checking ``axes`` against ``params``.

    Raises ValueError naming the offending leaf when the trees differ in structure, a leaf's label tuple has the
    wrong length, one label is used on axes of different sizes, or a :class:`Nested` label's leaf lacks exactly one
    axis labelled with its parent.
    """
    params_def = jax.tree.structure(params)
    axes_def = jax.tree.structure(axes, is_leaf=is_axes_leaf)
    if params_def != axes_def:
        raise ValueError(
            f"axes must have the structure of params; params is {params_def} but axes is {axes_def}."
        )
    sizes: dict[Label, int] = {}
    where: dict[Label, str] = {}
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), labels in zip(flat, axes_leaves(axes)):
        shape = np.shape(leaf)
        name = _path_name(path)
        if len(labels) != len(shape):
            raise ValueError(
                f"axes{name} has {len(labels)} labels {labels} but params{name} has shape {shape}; "
                "give exactly one label (or None) per array axis."
            )
        for label in labels:
            if isinstance(label, Nested) and list(labels).count(label.parent) != 1:
                raise ValueError(f"axes{name} = {labels} carries the nested label {label} but "
                                 f"{list(labels).count(label.parent)} axes labelled {label.parent!r}; a nested "
                                 "label needs exactly one axis of its parent in the same array.")
        for label, size in zip(labels, shape):
            if not permuted(label):
                continue
            if label in sizes and sizes[label] != size:
                raise ValueError(
                    f"label {label!r} has size {size} at params{name} but size {sizes[label]} at params{where[label]}; "
                    "one label must name axes of one size."
                )
            sizes[label] = size
            where[label] = name
    return sizes
