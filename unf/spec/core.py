"""Weight-space specs: for each leaf of a params tree, one label per axis naming the permutation group acting on it.

A label is any hashable (strings from hetnet, ints as in the original UNF code); ``None`` marks an axis that is not
permuted. Labels shared between leaves name one group: permuting that group reindexes every axis carrying it.

Stacked layers: a :class:`hetnet.axes.Nested` label is a group nested in a stacking axis (``"layers"``): each layer
index has its own permutation of it. The stacking axis itself is either *fixed* (listed in ``spec.fixed``: not
permuted, the model's exact symmetry; layers are told apart by their index) or a permuted label of its own (*tied*:
layers are interchangeable, so one set of layer coefficients serves any depth).

An unpermuted axis that still grows with the model's width (a conv feature map flattened ahead of a dense head, and
the channels of the conv layer feeding it) is labelled :data:`UNPERMUTED_WIDTH` when the spec is built: it is
stored as ``None`` (no permutation acts on it) and listed in ``spec.unpermuted_widths``, which the learned
optimizers read to give such tensors the step of a hidden matrix rather than an embedding's.

A spec read off the model's computation (:func:`unf.spec.infer`) also knows each leaf's *fan-in*: the axes the model
contracts with its input (a kernel's input features, a conv kernel's taps and input channels; none for a bias, a norm
scale or a lookup table). The learned optimizers and the Muon baseline read it, where it is known, to tell a matrix's
input axes from its output axes rather than guess them from the labels' order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
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
class UnpermutedWidth:
    """The type of :data:`UNPERMUTED_WIDTH`."""

    def __repr__(self) -> str:
        return "UNPERMUTED_WIDTH"


# The label, given to from_labels, of an axis that no permutation acts on but whose size grows with the model's width.
UNPERMUTED_WIDTH = UnpermutedWidth()


@dataclasses.dataclass(frozen=True)
class WeightSpaceSpec:
    """The labels and shapes of every leaf of a weight space, in ``jax.tree.leaves`` order.

    treedef: structure of the params tree; leaf_axes: one label tuple per leaf; leaf_shapes: array shapes;
    leaf_names: readable paths; sizes: the size of every label, as ``((label, size), ...)``; fixed: labels no
    permutation acts on that nested labels hang from; unpermuted_widths: per leaf, the axes labelled ``None`` that
    grow with the model's width (``()`` when no leaf has one); fan_in: per leaf, the axes the model contracts with
    its input (``()`` for a leaf it never contracts, ``None`` where that is not known), or ``()`` when no leaf's is
    known.
    """

    treedef: Any
    leaf_axes: tuple[tuple[Label | None, ...], ...]
    leaf_shapes: tuple[tuple[int, ...], ...]
    leaf_names: tuple[str, ...]
    sizes: tuple[tuple[Label, int], ...]
    fixed: tuple[Label, ...] = ()
    unpermuted_widths: tuple[tuple[int, ...], ...] = ()
    fan_in: tuple[tuple[int, ...] | None, ...] = ()

    def __post_init__(self):
        if self.fan_in:
            if len(self.fan_in) != len(self.leaf_axes):
                raise ValueError(f"fan_in has {len(self.fan_in)} entries; the weight space has {len(self.leaf_axes)} "
                                 "leaves.")
            for axes, labels, name in zip(self.fan_in, self.leaf_axes, self.leaf_names):
                if axes is not None and not all(isinstance(a, int) and 0 <= a < len(labels) for a in axes):
                    raise ValueError(f"fan_in names axes {axes} of leaf {name}, which has {len(labels)}; each must "
                                     "be an axis index of the leaf, or the entry None.")
        if self.unpermuted_widths:
            if len(self.unpermuted_widths) != len(self.leaf_axes):
                raise ValueError(f"unpermuted_widths has {len(self.unpermuted_widths)} entries; the weight space has "
                                 f"{len(self.leaf_axes)} leaves.")
            for axes, labels, name in zip(self.unpermuted_widths, self.leaf_axes, self.leaf_names):
                for axis in axes:
                    # unpermuted_as_groups gives such an axis a group of its own, on that leaf alone.
                    if not (0 <= axis < len(labels)) or not (labels[axis] is None
                                                             or isinstance(labels[axis], Unpermuted)):
                        raise ValueError(f"unpermuted_widths names axis {axis} of leaf {name} (labels {labels}); "
                                         "it must name an axis labelled None.")
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
        """Returns the labels as a tree with the params' structure, :data:`UNPERMUTED_WIDTH` on the unpermuted width
        axes, so ``from_labels(params, spec.axes_tree())`` rebuilds the spec."""
        return jax.tree.unflatten(self.treedef, [
            tuple(UNPERMUTED_WIDTH if i in wide else label for i, label in enumerate(labels))
            for labels, wide in zip(self.leaf_axes, self.leaf_unpermuted_widths)])

    @property
    def leaf_unpermuted_widths(self) -> tuple[tuple[int, ...], ...]:
        """Per leaf, the unpermuted axes that grow with the width (empty tuples where the spec lists none)."""
        return self.unpermuted_widths or ((),) * len(self.leaf_axes)

    @property
    def leaf_fan_in(self) -> tuple[tuple[int, ...] | None, ...]:
        """Per leaf, the axes the model contracts with its input; None where not known (every leaf, unless the spec
        was read off the model's computation)."""
        return self.fan_in or (None,) * len(self.leaf_axes)

    def leaves(self, tree: Any, name: str = "tree") -> list:
        """Returns the leaves of ``tree`` after checking it has this spec's structure."""
        leaves, treedef = jax.tree.flatten(tree)
        if treedef != self.treedef:
            given = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
            raise ValueError(f"{name} must have the weight space's structure {self.treedef}; got {treedef}."
                             + prefix_hint(self.leaf_names, given))
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


def prefix_hint(spec_names: Sequence[str], given_names: Sequence[str]) -> str:
    """Returns a sentence for an error when the two sets of leaf paths differ by a leading ``['params']``: the spec
    was built from flax ``variables`` and used on ``variables['params']``, or the other way round; else ``""``."""
    outer = "['params']"
    if spec_names and all(n.startswith(outer) for n in spec_names) and not any(
            n.startswith(outer) for n in given_names):
        return (" The spec was built from flax variables ({'params': ...}) and is used on the bare params: build it "
                "from variables['params'] (or pass {'params': params}).")
    if given_names and all(n.startswith(outer) for n in given_names) and not any(
            n.startswith(outer) for n in spec_names):
        return (" The tree has flax's outer 'params' entry but the spec was built from the bare params: pass "
                "variables['params'] (or build the spec from the variables).")
    return ""


@dataclasses.dataclass(frozen=True, order=True)
class Unpermuted:
    """The group that :func:`unpermuted_as_groups` gives one unpermuted axis: it permutes only axis ``axis`` of leaf
    ``leaf``, so layers treat each position of that axis alike, with coefficients that do not depend on its size."""

    leaf: str
    axis: int

    def __str__(self) -> str:
        return f"{self.leaf}:{self.axis}"


def unpermuted_as_groups(spec: "WeightSpaceSpec") -> "WeightSpaceSpec":
    """Returns ``spec`` with every unpermuted (``None``) axis relabelled as a group of its own
    (:class:`Unpermuted`, one per leaf and axis).

    An equivariant layer over the result is equivariant to a larger group than ``spec``'s, so it is still equivariant
    to ``spec``'s group; it mixes positions along such an axis only pointwise and through means, never with one
    coefficient per (output position, input position) pair, so its size does not depend on the axis's size (a
    32k vocabulary, a flattened conv feature map).
    """
    axes = tuple(tuple(Unpermuted(name, i) if label is None else label for i, label in enumerate(labels))
                 for labels, name in zip(spec.leaf_axes, spec.leaf_names))
    sizes = dict(spec.sizes)
    for labels, shape in zip(axes, spec.leaf_shapes):
        for label, n in zip(labels, shape):
            sizes.setdefault(label, n)
    return dataclasses.replace(spec, leaf_axes=axes, sizes=tuple(sorted(sizes.items(), key=lambda kv: repr(kv[0]))))


def from_labels(params: Any, labels: Any, fixed: Sequence[Label] = ()) -> WeightSpaceSpec:
    """Returns the spec of ``params`` whose axes carry ``labels`` (a tree of label tuples, ``None`` for unpermuted);
    ``fixed`` lists labels that name axes no permutation acts on but that nested labels hang from;
    :data:`UNPERMUTED_WIDTH` marks an unpermuted axis that grows with the model's width.

    Raises ValueError when the trees differ, a leaf has the wrong number of labels, or one label names axes of
    different sizes.
    """
    given = [tuple(a) for a in hetnet_axes.axes_leaves(labels)]
    wide = tuple(tuple(i for i, label in enumerate(a) if isinstance(label, UnpermutedWidth)) for a in given)
    labels = hetnet_axes.map_labels(lambda label: None if isinstance(label, UnpermutedWidth) else label, labels)
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
        unpermuted_widths=wide if any(wide) else (),
    )


def relabel(reference: WeightSpaceSpec, params: Any) -> WeightSpaceSpec:
    """Returns the spec of ``params`` whose every leaf carries the labels ``reference`` gives the leaf at the same
    path, with the sizes ``params`` has: the same labelled structure at another width, or a sub-tree of it (such as
    the tree ``optax.masked`` hands its inner transformation, whose masked-out nodes hold no leaves).

    Raises ValueError naming a leaf whose path ``reference`` lacks, whose rank differs, or whose label sizes clash.
    """
    by_name = dict(zip(reference.leaf_names, reference.leaf_axes))
    wide_by_name = dict(zip(reference.leaf_names, reference.leaf_unpermuted_widths))
    fan_in_by_name = dict(zip(reference.leaf_names, reference.leaf_fan_in))
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names, axes, shapes, sizes = [], [], [], {}
    for path, leaf in flat:
        name = jax.tree_util.keystr(path) or "<root>"
        if name not in by_name:
            raise ValueError(f"params leaf {name} is not in the weight space; it names {list(by_name)}."
                             + prefix_hint(reference.leaf_names, [name]))
        labels, shape = by_name[name], tuple(np.shape(leaf))
        if len(labels) != len(shape):
            raise ValueError(f"params leaf {name} has shape {shape} but its labels {labels} name {len(labels)} axes.")
        for label, n in zip(labels, shape):
            if label is not None and sizes.setdefault(label, n) != n:
                raise ValueError(f"label {label!r} has size {sizes[label]} elsewhere but {n} on params leaf {name}.")
        names.append(name)
        axes.append(labels)
        shapes.append(shape)
    wide = tuple(wide_by_name[name] for name in names)
    fan_in = tuple(fan_in_by_name[name] for name in names)
    return WeightSpaceSpec(treedef, tuple(axes), tuple(shapes), tuple(names),
                           tuple(sorted(sizes.items(), key=lambda kv: repr(kv[0]))),
                           tuple(label for label in reference.fixed if label in sizes), wide if any(wide) else (),
                           fan_in if any(a is not None for a in fan_in) else ())


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
    axes, shapes, sizes, wide, fan_ins = [], [], {}, [], []
    for labels, shape, name, widths, fan_in in zip(spec.leaf_axes, spec.leaf_shapes, spec.leaf_names,
                                                   spec.leaf_unpermuted_widths, spec.leaf_fan_in):
        if name.startswith(prefix):
            stacking = labels[0] if labels else None
            if stacking is None or not (stacking == hetnet_axes.LAYERS or any(
                    isinstance(l, Nested) and l.parent == stacking for l in labels)):
                raise ValueError(f"layer_key={layer_key!r}: leaf {name} with labels {labels} does not lead with a "
                                 "stacking axis; build the spec from a model whose layers are stacked.")
            labels = tuple(l.name if isinstance(l, Nested) else l for l in labels[1:])
            shape = shape[1:]
            widths = tuple(i - 1 for i in widths)
            fan_in = None if fan_in is None else tuple(i - 1 for i in fan_in if i > 0)
        for label, n in zip(labels, shape):
            if label is not None:
                sizes[label] = n
        axes.append(labels)
        shapes.append(shape)
        wide.append(widths)
        fan_ins.append(fan_in)
    return WeightSpaceSpec(spec.treedef, tuple(axes), tuple(shapes), spec.leaf_names,
                           tuple(sorted(sizes.items(), key=lambda kv: repr(kv[0]))),
                           tuple(label for label in spec.fixed if label in sizes), tuple(wide) if any(wide) else (),
                           spec.fan_in and tuple(fan_ins))
