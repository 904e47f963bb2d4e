"""muP-style per-tensor step scaling read off the weight-space labels, so a rule meta-trained narrow transfers wide.

Under the maximal-update parametrisation an Adam-like update of a tensor whose input grows with the width must shrink
like ``1 / width`` (hidden and readout matrices), while embeddings and vectors (biases, norm scales) keep an O(1)
step. A learned rule that emits one step size per tensor learns those sizes at its meta-training widths; unless they
are expressed relative to the tensor's width, a rule tuned at ``d_model = 16`` oversteps at 256. Every leaf gets a
*role* and an *effective width* ``n`` from its labels alone, and the rule multiplies its step by
``(n / REFERENCE_WIDTH) ** -alpha[role]`` with ``alpha`` learned per role and zero at initialisation (exactly Adam).
An orthogonalised step of a hidden matrix at Adam's RMS (``base="orthogonal"``) is full rank, and muP's spectral
condition shrinks it like ``1 / sqrt(width)`` instead (:data:`unf.lopt.adam_rules.ORTHOGONAL_HIDDEN_EXPONENT`).

Width axes are the permuted axes whose group grows with the model (``embed``, MLP units, heads, head dims, hidden
units of an MLP or CNN) and the unpermuted axes the spec lists as growing with it (``spec.unpermuted_widths``: a
flattened conv feature map and the channels feeding it); ``vocab``/``pos``/``classes``, the stacking axis, fixed
labels and other ``None`` axes are not.

- ``vector``: at most one width axis and nothing else (biases, norm scales); ``n`` = its size.
- ``input``: one width axis, last, after fixed-size axes (token and position embeddings, a first layer
  ``[features, hidden]``); ``n`` = its size.
- ``output``: one width axis followed by fixed-size axes (the unembedding ``[embed, vocab]``, a readout); ``n`` = its
  size.
- ``hidden``: two or more width axes; ``n = sqrt(prod of their sizes)``, which grows like the width for ``[d, 4d]``
  matrices, ``[d, heads, head_dim]`` projections (heads or head dims growing) and conv kernels alike.

Where the spec knows a leaf's fan-in (``spec.fan_in``, read off the model's computation by :func:`unf.spec.infer`),
it decides instead of the axes' order: a leaf is ``hidden`` when width axes sit on both sides of its fan-in, its
matrix view is ``[fan-in axes, other width axes]`` (an output projection ``[heads, head_dim, d]`` contracts its
first two; a conv kernel ``[kh, kw, in, out]`` its taps and input channels), a leaf whose width axes are all fan-in
is an ``output``, one with a fixed-size fan-in (a first layer, a first conv) an ``input``, and one the model never
contracts (a ``[heads, head_dim]`` bias) is no matrix: it keeps the role its labels give it, a ``vector`` where they
would make it ``hidden``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax

from hetnet import axes as hetnet_axes
from unf.lopt import tree_layout
from unf.spec import Unpermuted, WeightSpaceSpec

ROLES = ("vector", "input", "output", "hidden")
REFERENCE_WIDTH = 32.0


def is_width_label(label: Any, fixed: Sequence = ()) -> bool:
    """Returns whether an axis labelled ``label`` grows with the model's width."""
    if label is None or label in fixed or isinstance(label, Unpermuted):
        return False
    name = getattr(label, "name", label)
    return not (label in hetnet_axes.UNPERMUTED_LABELS or name in hetnet_axes.UNPERMUTED_LABELS)


def stacked_by_labels(spec: WeightSpaceSpec) -> list[bool]:
    """Returns per leaf of ``spec`` whether its first axis is the stacking axis ``layers`` (stacked layers)."""
    return [bool(labels) and labels[0] == hetnet_axes.LAYERS for labels in spec.leaf_axes]


def _within_layer(labels: Sequence, wide: Sequence[int], fan_in: Sequence[int] | None,
                  per_layer: bool) -> tuple[Sequence, tuple[int, ...], tuple[int, ...] | None]:
    """Returns a leaf's labels, unpermuted width axes and fan-in without its stacking axis where it is
    ``per_layer``."""
    if not per_layer:
        return labels, tuple(wide), None if fan_in is None else tuple(fan_in)
    return labels[1:], tuple(i - 1 for i in wide), None if fan_in is None else tuple(i - 1 for i in fan_in if i > 0)


def _width_axes(labels: Sequence, fixed: Sequence, unpermuted_widths: Sequence[int]) -> list[int]:
    return [i for i, label in enumerate(labels) if i in unpermuted_widths or is_width_label(label, fixed)]


def leaf_role(labels: Sequence, shape: Sequence[int], fixed: Sequence = (), unpermuted_widths: Sequence[int] = (),
              fan_in: Sequence[int] | None = None) -> tuple[int, float]:
    """Returns ``(role index into ROLES, effective width n)`` of one leaf (labels and shape without a stacking axis;
    ``unpermuted_widths``: the indices of its unpermuted axes that grow with the width; ``fan_in``: the axes the
    model contracts with its input, None where not known)."""
    width = _width_axes(labels, fixed, unpermuted_widths)
    sizes = [int(shape[i]) for i in width]
    if fan_in is not None and width:
        inputs = [int(shape[i]) for i in width if i in fan_in]
        outputs = [int(shape[i]) for i in width if i not in fan_in]
        if inputs and outputs:
            return ROLES.index("hidden"), math.sqrt(math.prod(sizes))
        if inputs:
            return ROLES.index("output"), float(math.prod(inputs))
        if fan_in:
            return ROLES.index("input"), float(math.prod(outputs))
        if len(width) >= 2:  # never contracted: a bias or a table, not a matrix
            return ROLES.index("vector"), float(math.prod(sizes))
    if len(width) >= 2:
        return ROLES.index("hidden"), math.sqrt(math.prod(sizes))
    if not width:
        return ROLES.index("vector"), 1.0
    n = float(sizes[0])
    if len(labels) == 1:
        return ROLES.index("vector"), n
    return (ROLES.index("input") if width[0] == len(labels) - 1 else ROLES.index("output")), n


def roles(spec: WeightSpaceSpec, stacked: Any) -> list[tuple[int, float]]:
    """Returns ``[(role, n)]`` per leaf of ``spec`` in leaf order; ``stacked``: one bool per leaf, True where the
    leaf leads with a stacking axis (dropped before the role is read)."""
    out = []
    for labels, shape, per_layer, wide, fan_in in zip(spec.leaf_axes, spec.leaf_shapes, stacked,
                                                      spec.leaf_unpermuted_widths, spec.leaf_fan_in):
        labels, wide, fan_in = _within_layer(labels, wide, fan_in, per_layer)
        out.append(leaf_role(labels, shape[1:] if per_layer else shape, spec.fixed, wide, fan_in))
    return out


def role_mask(spec: WeightSpaceSpec, role: str) -> Callable[[Any], Any]:
    """Returns the mask of ``optax.masked`` that selects the leaves the label-reading rules step as ``role`` (one of
    :data:`ROLES`), so one role's steps can be scaled alone, as a learning rate is tuned:
    ``optax.chain(opt, optax.masked(optax.scale(k), unf.lopt.role_mask(spec, "output")))``.

    The mask is a function of the params (or updates) that returns a tree like them, True on that role's leaves: it
    reads any tree with ``spec``'s leaves (plain dicts, ``nnx.State`` in ``nnx.Optimizer``, ``FrozenDict``, Flax's
    variable boxes). Leaves whose first axis is labelled ``"layers"`` are stacked layers, as
    :class:`unf.lopt.LabelRule` reads them."""
    if not isinstance(spec, WeightSpaceSpec):
        raise TypeError("spec must be a unf.spec.WeightSpaceSpec (unf.spec.infer, from_flax, mlp, cnn, from_labels), "
                        f"got {type(spec).__name__}.")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
    index = ROLES.index(role)
    selected = [found == index for found, _ in roles(spec, stacked_by_labels(spec))]

    # Names as the rules read them (Flax's variable boxes left out), so a boxed spec reads unboxed params and back.
    names = tree_layout.leaf_names(spec.unflatten(range(spec.num_leaves)))

    def mask(tree: Any) -> Any:
        treedef = jax.tree.structure(tree)
        if treedef != spec.treedef and tree_layout.leaf_names(tree) != names:
            raise ValueError(f"role_mask: the tree's leaves {list(tree_layout.leaf_names(tree))} are not the spec's "
                             f"{list(names)}; build the spec from these params.")
        return treedef.unflatten(selected)

    return mask


def matrix_views(spec: WeightSpaceSpec,
                 stacked: Sequence[bool]) -> list[tuple[tuple[int, ...], tuple[int, ...]] | None]:
    """Returns per leaf of ``spec`` (leaf order) its :func:`matrix_axes` within one layer: ``stacked``, one bool per
    leaf, is True where the leaf leads with a stacking axis, which the axes then do not count."""
    out = []
    for labels, per_layer, wide, fan_in in zip(spec.leaf_axes, stacked, spec.leaf_unpermuted_widths,
                                               spec.leaf_fan_in):
        labels, wide, fan_in = _within_layer(labels, wide, fan_in, per_layer)
        out.append(matrix_axes(labels, spec.fixed, wide, fan_in))
    return out


def matrix_axes(labels: Sequence, fixed: Sequence = (), unpermuted_widths: Sequence[int] = (),
                fan_in: Sequence[int] | None = None) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Returns ``(input axes, output axes)`` of a hidden tensor seen as a matrix (Muon's view), or None for a tensor
    with fewer than two width axes. With ``fan_in`` known, the input is every fan-in axis (a conv kernel
    ``[kh, kw, in, out]`` is one ``[kh x kw x in, out]`` matrix) and the output the width axes outside it (None
    unless the fan-in holds a width axis and an output exists). Else the residual stream's ``embed`` axes are the
    input when they lead and the output when they close the tensor; a tensor without ``embed`` last reads its first
    width axis. Other axes are batch."""
    width_axes = _width_axes(labels, fixed, unpermuted_widths)
    if fan_in is not None:
        outputs = tuple(i for i in width_axes if i not in fan_in)
        if not outputs or not any(i in fan_in for i in width_axes):
            return None
        # Every contracted axis is part of the map's input, a conv kernel's taps included: ``[taps x in, out]`` is
        # the linear map the layer applies to a patch, which Muon's conv practice orthogonalises.
        return tuple(sorted(fan_in)), outputs
    if len(width_axes) < 2:
        return None
    if labels[width_axes[-1]] == "embed":
        return tuple(width_axes[:-1]), (width_axes[-1],)
    return (width_axes[0],), tuple(width_axes[1:])
