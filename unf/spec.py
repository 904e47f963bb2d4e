"""Weight-space specs: for each leaf of a params tree, one label per axis naming the permutation group acting on it.

A label is any hashable (strings from hetnet, ints as in the original UNF code); ``None`` marks an axis that is not
permuted. Labels shared between leaves name one group: permuting that group reindexes every axis carrying it.

Stacked layers: a :class:`hetnet.axes.Nested` label is a group nested in a stacking axis (``"layers"``): each layer
index has its own permutation of it. The stacking axis itself is either *fixed* (listed in ``spec.fixed``: not
permuted, the model's exact symmetry; layers are told apart by their index) or a permuted label of its own (*tied*:
layers are interchangeable, so one set of layer coefficients serves any depth).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from hetnet import axes as hetnet_axes
from hetnet import symmetry
from hetnet.axes import Nested

Label = Hashable


def _any_label(label) -> bool:
    return label is not None


@dataclasses.dataclass(frozen=True)
class WeightSpaceSpec:
    """The labels and shapes of every leaf of a weight space, in ``jax.tree.leaves`` order.

    treedef: structure of the params tree; leaf_axes: one label tuple per leaf; leaf_shapes: array shapes;
    leaf_names: readable paths; sizes: the size of every label, as ``((label, size), ...)``.
    """

    treedef: Any
    leaf_axes: tuple[tuple[Label | None, ...], ...]
    leaf_shapes: tuple[tuple[int, ...], ...]
    leaf_names: tuple[str, ...]
    sizes: tuple[tuple[Label, int], ...]
    fixed: tuple[Label, ...] = ()

    def __post_init__(self):
        named = {label for label, _ in self.sizes}
        for label in self.fixed:
            if label not in named:
                raise ValueError(f"fixed label {label!r} names no axis of the weight space; its labels are "
                                 f"{sorted(map(repr, named))}.")
        for labels, name in zip(self.leaf_axes, self.leaf_names):
            for label in labels:
                if isinstance(label, Nested) and list(labels).count(label.parent) != 1:
                    raise ValueError(f"leaf {name} carries the nested label {label} but not exactly one axis "
                                     f"labelled {label.parent!r}, its parent.")

    @property
    def num_leaves(self) -> int:
        return len(self.leaf_axes)

    @property
    def labels(self) -> tuple[Label, ...]:
        return tuple(label for label, _ in self.sizes)

    def size(self, label: Label) -> int:
        return dict(self.sizes)[label]

    @property
    def permuted_sizes(self) -> dict:
        """``label: size`` of every label a permutation acts on (all but the fixed ones)."""
        return {label: n for label, n in self.sizes if label not in self.fixed}

    @property
    def is_stacked(self) -> bool:
        """Whether some leaf carries a nested label (a per-layer group of stacked layers)."""
        return any(isinstance(label, Nested) for labels in self.leaf_axes for label in labels)

    def axes_tree(self) -> Any:
        """Returns the labels as a tree with the params' structure."""
        return jax.tree.unflatten(self.treedef, list(self.leaf_axes))

    def leaves(self, tree: Any, name: str = "tree") -> list:
        """Returns the leaves of ``tree`` after checking it has this spec's structure."""
        leaves, treedef = jax.tree.flatten(tree)
        if treedef != self.treedef:
            raise ValueError(f"{name} must have the weight space's structure {self.treedef}; got {treedef}.")
        return leaves

    def unflatten(self, leaves: Sequence) -> Any:
        return jax.tree.unflatten(self.treedef, list(leaves))

    def sample(self, key: jax.Array) -> symmetry.Permutations:
        """Returns a uniformly random group element: one permutation per permuted label, one per layer index for a
        nested label."""
        return symmetry.sample_from_sizes(key, self.permuted_sizes, dict(self.sizes))

    def apply(self, perms: symmetry.Permutations, tree: Any) -> Any:
        """Returns ``tree`` acted on by ``perms``. Leaves may carry trailing axes (channels) beyond the labelled ones."""
        leaves = self.leaves(tree)
        for leaf, shape, name in zip(leaves, self.leaf_shapes, self.leaf_names):
            if tuple(np.shape(leaf)[: len(shape)]) != shape:
                raise ValueError(f"leaf {name} has shape {np.shape(leaf)}; expected {shape} + trailing axes.")
        return self.unflatten(
            [symmetry.permute_leaf(x, labels, perms) for x, labels in zip(leaves, self.leaf_axes)]
        )


def from_labels(params: Any, labels: Any, fixed: Sequence[Label] = ()) -> WeightSpaceSpec:
    """Returns the spec of ``params`` whose axes carry ``labels`` (a tree of label tuples, ``None`` for unpermuted);
    ``fixed`` lists labels that name axes no permutation acts on but that nested labels hang from.

    Raises ValueError when the trees differ, a leaf has the wrong number of labels, or one label names axes of
    different sizes.
    """
    sizes = hetnet_axes.check_axes(params, labels, permuted=_any_label)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    leaf_axes = tuple(tuple(a) for a in hetnet_axes.axes_leaves(labels))
    return WeightSpaceSpec(
        treedef=jax.tree.structure(params),
        leaf_axes=leaf_axes,
        leaf_shapes=tuple(tuple(np.shape(x)) for _, x in flat),
        leaf_names=tuple(jax.tree_util.keystr(p) or "<root>" for p, _ in flat),
        sizes=tuple(sorted(sizes.items(), key=lambda kv: repr(kv[0]))),
        fixed=tuple(fixed),
    )


def relabel(reference: WeightSpaceSpec, params: Any) -> WeightSpaceSpec:
    """Returns the spec of ``params`` whose every leaf carries the labels ``reference`` gives the leaf at the same
    path, with the sizes ``params`` has: the same labelled structure at another width, or a sub-tree of it (such as
    the tree ``optax.masked`` hands its inner transformation, whose masked-out nodes hold no leaves).

    Raises ValueError naming a leaf whose path ``reference`` lacks, whose rank differs, or whose label sizes clash.
    """
    by_name = dict(zip(reference.leaf_names, reference.leaf_axes))
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names, axes, shapes, sizes = [], [], [], {}
    for path, leaf in flat:
        name = jax.tree_util.keystr(path) or "<root>"
        if name not in by_name:
            raise ValueError(f"params leaf {name} is not in the weight space; it names {list(by_name)}.")
        labels, shape = by_name[name], tuple(np.shape(leaf))
        if len(labels) != len(shape):
            raise ValueError(f"params leaf {name} has shape {shape} but its labels {labels} name {len(labels)} axes.")
        for label, n in zip(labels, shape):
            if label is not None and sizes.setdefault(label, n) != n:
                raise ValueError(f"label {label!r} has size {sizes[label]} elsewhere but {n} on params leaf {name}.")
        names.append(name)
        axes.append(labels)
        shapes.append(shape)
    return WeightSpaceSpec(treedef, tuple(axes), tuple(shapes), tuple(names),
                           tuple(sorted(sizes.items(), key=lambda kv: repr(kv[0]))),
                           tuple(label for label in reference.fixed if label in sizes))


LAYERS_MODES = ("exact", "tied")


def from_hetnet(params: Any, axes: Any, *, io_as_groups: bool = False, layers: str = "exact") -> WeightSpaceSpec:
    """Returns the spec of a hetnet model from its axes labels.

    By default the vocabulary, position and class axes are unpermuted (``None``): the spec's group is exactly the
    model's symmetry, and layers mix those axes densely through their channels. With ``io_as_groups=True`` each of
    those labels becomes a group of its own (shared by every leaf carrying it), the original UNF code's convention:
    layers are then equivariant to a larger group than the model's, with far fewer weights.

    ``layers`` sets the stacked blocks' ``"layers"`` axis: ``"exact"`` keeps it fixed (the model's true symmetry:
    each layer's groups permute independently, layers never swap), ``"tied"`` makes it a permuted group, so an
    equivariant layer's coefficients do not depend on the depth.
    """
    if layers not in LAYERS_MODES:
        raise ValueError(f"layers must be one of {LAYERS_MODES}, got {layers!r}.")
    stacking = hetnet_axes.LAYERS

    def keep(label):
        if label == stacking or hetnet_axes.is_permuted(label):
            return label
        return label if io_as_groups else None

    labels = hetnet_axes.map_labels(keep, axes)
    present = any(stacking in leaf for leaf in hetnet_axes.axes_leaves(labels))
    return from_labels(params, labels, fixed=(stacking,) if layers == "exact" and present else ())


def layer_view(spec: WeightSpaceSpec, layer_key: str) -> WeightSpaceSpec:
    """Returns the spec of one layer's view of a stacked model: the leaves under ``params[layer_key]`` lose their
    leading stacking axis and their nested labels become plain ones (``Nested("blocks/mlp") -> "blocks/mlp"``); the
    other leaves are kept. The view's params are ``{**params, layer_key: <layer i's slice>}``.
    """
    prefix = f"[{layer_key!r}]"
    if not any(n.startswith(prefix) for n in spec.leaf_names):
        raise ValueError(f"layer_key={layer_key!r}: the spec has no leaves under {prefix}; it names "
                         f"{list(spec.leaf_names)}.")
    axes, shapes, sizes = [], [], {}
    for labels, shape, name in zip(spec.leaf_axes, spec.leaf_shapes, spec.leaf_names):
        if name.startswith(prefix):
            stacking = labels[0] if labels else None
            if stacking is None or not (stacking == hetnet_axes.LAYERS or any(
                    isinstance(l, Nested) and l.parent == stacking for l in labels)):
                raise ValueError(f"layer_key={layer_key!r}: leaf {name} with labels {labels} does not lead with a "
                                 "stacking axis; build the spec from a model whose layers are stacked.")
            labels = tuple(l.name if isinstance(l, Nested) else l for l in labels[1:])
            shape = shape[1:]
        for label, n in zip(labels, shape):
            if label is not None:
                sizes[label] = n
        axes.append(labels)
        shapes.append(shape)
    return WeightSpaceSpec(spec.treedef, tuple(axes), tuple(shapes), spec.leaf_names,
                           tuple(sorted(sizes.items(), key=lambda kv: repr(kv[0]))),
                           tuple(label for label in spec.fixed if label in sizes))


_NUMBERED = re.compile(r"^(?P<stem>.*?)_?(?P<index>\d+)$")


def _network_order(keys: list) -> list:
    """Returns ``keys`` in network order: by their number when every key is ``<stem><n>`` or ``<stem>_<n>`` with one
    stem (flax's ``Dense_0, Dense_1, ..., Dense_10``, which ``jax.tree.map`` returns sorted as strings, so
    ``Dense_10`` before ``Dense_2``), else as given."""
    matches = [_NUMBERED.match(k) if isinstance(k, str) else None for k in keys]
    if keys and all(matches) and len({m.group("stem") for m in matches}) == 1:
        return [k for _, k in sorted(zip((int(m.group("index")) for m in matches), keys))]
    return keys


def _layer_keys(params: Any, name: str, order: Sequence | None) -> list:
    """Returns the layer keys (dict) or indices (list) in network order: ``order`` if given; else, for keys numbered
    with one stem (``Dense_0 ... Dense_10``), by number; else the dict's own order, which is call order for params
    made by flax's ``init``."""
    if isinstance(params, Mapping):
        keys = _network_order(list(params)) if order is None else list(order)
        if sorted(map(repr, keys)) != sorted(map(repr, params)):
            raise ValueError(f"{name} order {keys} must name every layer of the params exactly once: {list(params)}.")
        return keys
    if isinstance(params, (list, tuple)):
        if order is not None:
            raise ValueError(f"{name} order applies to a dict of layers; a list is already in order.")
        return list(range(len(params)))
    raise TypeError(f"{name} params must be a list of layers or a dict of layers, got {type(params).__name__}.")


def _kernel_and_bias(layer: Any, name: str, i: int):
    if not isinstance(layer, Mapping):
        raise TypeError(f"{name} layer {i} must be a dict with a kernel ('kernel' or 'w'), got {type(layer).__name__}.")
    k_key = next((k for k in ("kernel", "w") if k in layer), None)
    if k_key is None:
        raise ValueError(f"{name} layer {i} has keys {sorted(layer)}; expected 'kernel' or 'w' (and 'bias' or 'b').")
    b_key = next((k for k in ("bias", "b") if k in layer), None)
    extra = set(layer) - {k_key, b_key}
    if extra:
        raise ValueError(f"{name} layer {i} has unexpected keys {sorted(extra)}.")
    return k_key, b_key


def _feedforward_labels(params: Any, name: str, input_label, output_label, spatial_ok: bool, order) -> Any:
    keys = _layer_keys(params, name, order)
    labels = {}
    prev = input_label
    for i, key in enumerate(keys):
        layer = params[key]
        k_key, b_key = _kernel_and_bias(layer, name, i)
        kernel_rank = np.ndim(layer[k_key])
        if kernel_rank != 2 and not (spatial_ok and kernel_rank >= 3):
            raise ValueError(f"{name} layer {i} kernel has rank {kernel_rank}; expected [in, out]"
                             + (" or [*spatial, in, out]" if spatial_ok else "") + ".")
        out = output_label if i == len(keys) - 1 else i
        entry = {k_key: (None,) * (kernel_rank - 2) + (prev, out)}
        if b_key is not None:
            entry[b_key] = (out,)
        labels[key] = entry
        prev = out
    if isinstance(params, Mapping):
        return {k: labels[k] for k in params}
    return type(params)(labels[i] for i in range(len(keys)))


def _flax_variables(helper):
    """Lets a helper take flax's ``{"params": ...}`` variables as well as the bare params tree."""

    def wrapped(params, **kwargs):
        if isinstance(params, Mapping) and list(params) == ["params"]:
            inner = helper(params["params"], **kwargs)
            return from_labels(params, {"params": inner.axes_tree()})
        return helper(params, **kwargs)

    wrapped.__doc__, wrapped.__name__ = helper.__doc__, helper.__name__
    return wrapped


@_flax_variables
def mlp(
    params: Any,
    *,
    input_label: Label | None = None,
    output_label: Label | None = None,
    order: Sequence | None = None,
) -> WeightSpaceSpec:
    """Returns the spec of an MLP: a list of layers, or a dict of layers in network order (flax's ``init`` output
    is; else pass ``order``, the keys in network order). Each layer has a kernel ``[in, out]`` (``kernel`` or
    ``w``) and optional bias ``[out]``. Hidden layer ``i``'s units carry label ``i``; the network's input and output
    axes are unpermuted unless labels are given.
    """
    return from_labels(params, _feedforward_labels(params, "mlp", input_label, output_label, False, order))


@_flax_variables
def cnn(
    params: Any,
    *,
    input_label: Label | None = None,
    output_label: Label | None = None,
    order: Sequence | None = None,
) -> WeightSpaceSpec:
    """Returns the spec of a CNN with global pooling before its dense head: layers (ordered as for :func:`mlp`)
    with kernels ``[*spatial, in, out]`` (conv) or ``[in, out]`` (dense). Spatial kernel axes are not permuted; the
    pooled channels keep the last conv layer's label, so the first dense layer's input axis shares it.
    """
    return from_labels(params, _feedforward_labels(params, "cnn", input_label, output_label, True, order))


@_flax_variables
def rnn(params: Any, *, hidden_label: Label = "hidden", input_label: Label | None = None) -> WeightSpaceSpec:
    """Returns the spec of a recurrent cell's params: a dict of dense parts (flax's LSTMCell/GRUCell/SimpleCell
    layout: ``{"ii": {"kernel": [in, h]}, "hi": {"kernel": [h, h], "bias": [h]}, ...}``), or of raw arrays with
    the same shapes. A kernel whose first axis reads the hidden state (key starting with ``h``) carries the hidden
    group on both axes; input kernels carry ``input_label`` then the hidden group; biases the hidden group.
    """
    if not isinstance(params, Mapping) or not params:
        raise TypeError("rnn params must be a non-empty dict of the cell's dense parts.")

    def labels_for(key: str, leaf_name: str, arr) -> tuple:
        rank = np.ndim(arr)
        if rank == 1:
            return (hidden_label,)
        if rank != 2:
            raise ValueError(f"rnn part {key!r}/{leaf_name} has rank {rank}; expected a [in, h] kernel or [h] bias.")
        return (hidden_label if str(key).startswith("h") else input_label, hidden_label)

    labels = {}
    for key, part in params.items():
        if isinstance(part, Mapping):
            labels[key] = {name: labels_for(key, name, arr) for name, arr in part.items()}
        else:
            labels[key] = labels_for(key, key, part)
    return from_labels(params, labels)


__all__ = ["WeightSpaceSpec", "Nested", "LAYERS_MODES", "from_labels", "from_hetnet", "layer_view", "mlp", "cnn", "rnn"]


from unf.flax_labels import FLAX_RULES, from_flax  # noqa: E402 - it builds on from_labels above
