"""A weight-space spec read off the model's own computation: :func:`infer` traces ``fn(params, *args)`` to a jaxpr
and finds which parameter axes one permutation must move together for the output to stay the same.

Every axis of every value in the trace is a node; an operation joins the nodes it ties (an elementwise op its
operands' axes, a contraction the two contracted axes, a conv its channels, a gather or scatter the axes it carries
whole). A group of joined nodes is a permutation group of the model when nothing *pins* its positions: the data
given and the output returned, constants (a sinusoidal position table, a causal mask), indices (a gather's, an
``iota``'s), spatial and scanned axes, and any operation the inference does not know. An axis that a reshape or
concatenation merges or splits is no longer permuted; when a width-sized group sits on one side of it (a conv
feature map flattened ahead of a dense head, a projection split into heads), the axis is
:data:`unf.spec.UNPERMUTED_WIDTH`, and so is an axis pinned by constants alone (a stream a sinusoidal table is added
to), as a constant grows with the model where the data and the output do not. Dead code is dropped first, so the
running-average updates of a BatchNorm in training mode pin nothing.

The result is conservative: every group it gives is a symmetry of ``fn`` (check it with
:func:`unf.spec.check_symmetry`), though it may miss one a human would see (a head split's block structure).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax

from hetnet.axes import LAYERS, Nested
from unf.spec.axis_graph import AxisGraph, nodes_of, size_of
from unf.spec.core import UNPERMUTED_WIDTH, WeightSpaceSpec, from_labels
from unf.spec.jaxpr_walk import Walker


def _resolve(g: AxisGraph) -> tuple[set, set]:
    """Returns the roots of the classes that are pinned and of those that are unpermuted but grow with the width.

    A merge, split or cut fixes positions on both sides. When every class on one side is pinned (a piece one
    position long counts as pinned), so is the other side (a flattened image's positions, a slice of the position
    table); otherwise the classes it touches that are not pinned keep the width of the group that feeds them. A
    class pinned by constants alone (the residual stream a sinusoidal table is added to) is pinned but keeps its
    width: the constant grows with the model.
    """
    by_constant = {g.find(n) for n in g.constant if size_of(n) > 1}
    # A piece of one position (``w[0]`` of a fused ``[2, d, f]`` gate) has nothing to permute and no width, so the
    # axis it is cut from is fixed-size as well: never counted as width.
    single = {g.find(n) for a, b in g.relations for n in a + b if size_of(n) == 1}
    pinned = {g.find(n) for n in g.pinned} | single
    by_constant -= {g.find(n) for n in g.pinned - g.constant}
    changed = True
    while changed:
        changed = False
        for a, b in g.relations:
            ra, rb = {g.find(n) for n in a}, {g.find(n) for n in b}
            for side, other in ((ra, rb), (rb, ra)):
                if side and side <= pinned and not other <= pinned:
                    pinned |= other
                    changed = True
    wide = set(by_constant)
    for a, b in g.relations:
        wide |= {g.find(n) for n in a + b} - pinned
    return pinned - by_constant, wide


def _leaf_label_name(path, axis: int) -> str:
    keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    return f"{'/'.join(keys) or 'params'}:{axis}"


def infer(fn: Callable[..., Any], params: Any, *args: Any, state: Any = None) -> WeightSpaceSpec:
    """Returns the weight-space spec of ``params`` read off ``fn``'s computation (see the module docs).

    fn: ``fn(params, *args)`` returning what the model's symmetry leaves unchanged (logits, a loss); a BatchNorm in
    training mode is fine (its running-average updates are not returned), and so is dropout (its mask is i.i.d.
    noise, as likely under any permutation; check the spec with :func:`unf.spec.check_symmetry` with it off).
    args: example inputs (arrays or pytrees; their values do not matter, their shapes do). state: variables that
    move with the params but are not trained (BatchNorm's ``batch_stats`` in inference mode); given, ``fn`` is called
    as ``fn(params, state, *args)`` and the spec is of ``params`` alone. An nnx Module is inferred as
    ``infer(model, *args)``: the spec is of its ``nnx.Param`` state (as ``nnx.to_pure_dict`` writes it, the tree
    ``nnx.Optimizer`` hands the optimizer), every other variable moving with it.

    Axes that no permutation can move are ``None``; those a merge or split keeps from a width-sized group are
    :data:`unf.spec.UNPERMUTED_WIDTH`; the axis a ``lax.scan`` iterates over is ``"layers"`` (fixed), and a group
    that lives inside one iteration only is :class:`hetnet.axes.Nested` in it (one permutation per layer). The
    spec's ``fan_in`` gives each leaf's contracted axes as the model reads it (a view of the leaf through transposes,
    casts and parameter-only arithmetic such as a weight norm counts; a sum with the data does not). Warns naming the
    operations it does not know; the axes they touch are pinned.
    """
    from flax import nnx

    if isinstance(fn, nnx.Module):  # infer(model, *args): its Params, the rest (BatchStat) moving with them
        if state is not None:
            raise ValueError("state applies to infer(fn, params, *args, state=...); an nnx model's variables other "
                             "than its nnx.Param already move with them: call infer(model, *args).")
        graphdef, param_state, rest = nnx.split(fn, nnx.Param, ...)
        args = (params,) + args

        def fn(p, s, *inputs):
            return merge_params(graphdef, param_state, p, s)(*inputs)

        params, state = nnx.to_pure_dict(param_state), rest
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(params, *args), got {type(fn).__name__}.")
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    if not flat:
        raise ValueError("params holds no arrays; pass the params tree fn reads.")
    for path, leaf in flat:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise TypeError(f"params leaf {jax.tree_util.keystr(path) or '<root>'} is a {type(leaf).__name__}; "
                            "params must be a pytree of arrays.")
    free = (params,) if state is None else (params, state)
    closed = jax.make_jaxpr(lambda free_trees, rest: fn(*free_trees, *rest))(free, args)
    jaxpr = closed.jaxpr
    n_params, n_free = len(flat), len(jax.tree.leaves(free))
    g = AxisGraph()
    walker = Walker(g)
    for var in jaxpr.invars[n_params:]:
        g.data.add((0, var))  # the inputs, and the state that is not trained
    for var in jaxpr.invars[n_free:]:
        walker.pin_atom(0, var)
    for var in jaxpr.outvars:
        walker.pin_atom(0, var)
    for i, var in enumerate(jaxpr.invars[:n_params]):
        for axis, node in enumerate(nodes_of(0, var)):
            g.origins[node] = frozenset({(i, axis)})
    walker.walk(jaxpr, closed.consts, 0)
    if g.unknown:
        warnings.warn(f"unf.spec.infer: {sorted(g.unknown)} are not operations it knows; every axis they touch is "
                      "kept unpermuted.", stacklevel=2)
    pinned, wide = _resolve(g)
    scan_roots = _layers_roots(g)
    labels, named = [], {}
    for (path, leaf), var in zip(flat, jaxpr.invars[:n_params]):
        leaf_labels = []
        for axis, node in enumerate(nodes_of(0, var)):
            root = g.find(node)
            if root in scan_roots:
                leaf_labels.append(LAYERS)
            elif size_of(node) == 1 or root in pinned:
                leaf_labels.append(None)
            elif root in wide:
                leaf_labels.append(UNPERMUTED_WIDTH)
            else:
                if root not in named:
                    name = _leaf_label_name(path, axis)
                    scan = _nested_in(g, root, scan_roots)
                    named[root] = name if scan is None else Nested(name)
                leaf_labels.append(named[root])
        labels.append(tuple(leaf_labels))
    fixed = (LAYERS,) if any(LAYERS in a for a in labels) else ()
    spec = from_labels(params, jax.tree.unflatten(jax.tree.structure(params), labels), fixed=fixed)
    return dataclasses.replace(spec, fan_in=tuple(_fan_in(g.uses.get(i, set())) for i in range(n_params)))


def with_fan_in(spec: WeightSpaceSpec, fn: Callable[..., Any], params: Any, *args: Any,
                state: Any = None) -> WeightSpaceSpec:
    """Returns ``spec`` with each leaf's fan-in read off ``fn``'s computation as :func:`infer` reads it, its labels
    unchanged.

    A spec written from names alone (linen variables through :func:`unf.spec.from_flax`, :func:`unf.spec.from_labels`)
    knows which axes a kernel contracts only from its names' order, so a linen conv kernel ``[kh, kw, in, out]`` is
    read as one ``[in, out]`` matrix per tap; traced, it is one ``[kh x kw x in, out]`` matrix, the map the layer
    applies to a patch, as an nnx ``Conv`` is. fn, params, args and state are as :func:`infer` takes them (an nnx
    Module as ``with_fan_in(spec, model, *args)``). A leaf the trace sees read more than one way keeps the fan-in
    ``spec`` gives it.

    Raises TypeError when ``spec`` is not a spec, ValueError when ``params`` is not the tree it describes (leaf paths
    and shapes).
    """
    if not isinstance(spec, WeightSpaceSpec):
        raise TypeError(f"spec must be a WeightSpaceSpec (unf.spec.from_flax, from_labels, ...), got "
                        f"{type(spec).__name__}.")
    traced = infer(fn, params, *args, state=state)
    expected = dict(zip(spec.leaf_names, map(tuple, spec.leaf_shapes)))
    given = dict(zip(traced.leaf_names, map(tuple, traced.leaf_shapes)))
    if expected != given:
        differ = sorted(n for n in expected.keys() | given.keys() if expected.get(n) != given.get(n))
        listed = ", ".join(f"{n}: spec {expected.get(n, 'none')}, params {given.get(n, 'none')}" for n in differ)
        raise ValueError(f"params must be the tree spec describes; these leaves differ (path: shapes): {listed}.")
    fan_in = tuple(mine if mine is not None else theirs for mine, theirs in zip(traced.fan_in, spec.leaf_fan_in))
    return dataclasses.replace(spec, fan_in=fan_in)


def merge_params(graphdef: Any, param_state: Any, params: Any, *rest: Any) -> Any:
    """Returns the nnx module ``graphdef`` describes with its ``nnx.Param`` state (shaped like ``param_state``)
    replaced by ``params``, a pure dict as ``nnx.to_pure_dict`` writes it, and its other variables ``rest``: the
    module a function of plain params calls."""
    from flax import nnx

    state = jax.tree.map(lambda v: v, param_state)  # replace_by_pure_dict writes in place
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state, *rest)


def _fan_in(uses: set) -> tuple[int, ...] | None:
    """Returns a leaf's fan-in from the ways the model reads it: the axes its contractions contract when they all
    contract the same ones, ``()`` when it is never contracted (a bias, a norm scale, a lookup table), None when it
    is read in more than one way (a tied embedding, looked up and contracted) or along a batch axis."""
    contracted = {use[1] for use in uses if use[0] == "contract"}
    if ("other",) in uses or len(contracted) > 1 or (contracted and ("gather",) in uses):
        return None
    return next(iter(contracted), ())


def _layers_roots(g: AxisGraph) -> dict:
    """Returns ``{root of a scanned axis: scan id}`` for the scans whose length is the first scan's (one ``layers``
    label has one size; a scan of another length keeps its axis unlabelled)."""
    out: dict = {}
    lengths = [length for _, anchor, length in g.scans if anchor is not None]
    for scan_id, anchor, length in g.scans:
        if anchor is not None and length == lengths[0]:
            out.setdefault(g.find(anchor), scan_id)
    return out


def _nested_in(g: AxisGraph, root, scan_roots: dict) -> int | None:
    """Returns the scan a class lives in one iteration of (its every node is inside the scan's body, or an axis
    after the scanned one of a value stacked over that scan), or None."""
    members = g.members(root)
    for layers_root, scan_id in scan_roots.items():
        def inside(node, scan_id=scan_id, layers_root=layers_root):
            if scan_id in g.scopes[node[0]]:
                return True
            return node[2] >= 1 and g.find((node[0], node[1], 0)) == layers_root
        if all(inside(n) for n in members):
            return scan_id
    return None
