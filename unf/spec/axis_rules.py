"""What each primitive does to the axis graph (:mod:`unf.spec.axis_graph`): the axes it ties are joined (a
contraction's two contracted axes, a conv's channels, a transpose's moved axes), the ones whose positions it fixes
are pinned (indices, spatial windows, an operation it does not know), and an axis it merges, splits or cuts (a
reshape, a concatenation, a slice) is recorded on both sides; contractions and gathers of a parameter's views are
recorded as the ways that parameter is read."""

from __future__ import annotations

from collections.abc import Sequence

from jax.extend import core as jcore

from unf.spec.axis_graph import AxisGraph, nodes_of, size_of

_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
                         "reduce_xor"})
# Reductions of a parameter give statistics of it (a norm), not its values rearranged.
_STATISTICS = _REDUCTIONS | {"argmax", "argmin"}
_ORDERED_ALONG_AXIS = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})


class AxisRules:
    """The graph operations every rule uses, and one ``op_<primitive>`` rule per primitive it knows."""

    def __init__(self, graph: AxisGraph):
        self.g = graph
        self.accounted: set[int] = set()  # the leaves the equation being read recorded a read of

    def pin(self, nodes) -> None:
        self.g.pinned.update(n for n in nodes if size_of(n) > 1)

    def pin_atom(self, ctx, atom) -> None:
        self.pin(nodes_of(ctx, atom))

    def join_atoms(self, ctx_a, a, ctx_b, b) -> None:
        for na, nb in zip(nodes_of(ctx_a, a), nodes_of(ctx_b, b)):
            self.view(na, nb)

    def view(self, a, b) -> None:
        """Joins ``a`` to ``b``, whose values are ``a``'s in another place (a transpose, an elementwise op, a call's
        operand), so ``b`` is a view of the parameter axes ``a`` is."""
        self.g.join(a, b)
        self._add_origins([a], b)

    def _add_origins(self, sources, target) -> None:
        """Makes ``target`` a view of every parameter axis the nodes ``sources`` are views of."""
        found = frozenset().union(*(self.g.origins.get(node, frozenset()) for node in sources))
        if found:
            self.g.origins[target] = self.g.origins.get(target, frozenset()) | found

    def carry_data(self, ctx_a, a, ctx_b, b) -> None:
        """Marks ``b`` as data where ``a``, whose value it takes, is."""
        if isinstance(a, jcore.Var) and (ctx_a, a) in self.g.data:
            self.g.data.add((ctx_b, b))

    def rearranged(self, ctx, out, sources, target) -> None:
        """Records that node ``target`` of ``out`` holds values from the positions of ``sources`` (an axis merged,
        split, cut or concatenated): unless ``out`` is of the data, it is a view of every parameter axis they are,
        so a contraction over it reads them."""
        if (ctx, out) not in self.g.data:
            self._add_origins(sources, target)

    def kept_whole(self, ctx, out, a, b) -> None:
        """Joins ``a`` to node ``b`` of ``out``, which holds ``a``'s positions in order; a view of ``a``'s parameter
        axes unless ``out`` is of the data."""
        self.g.join(a, b)
        self.rearranged(ctx, out, [a], b)

    def leaves_read(self, ctx, atoms) -> set[int]:
        """Returns the parameter leaves the values ``atoms`` are views of."""
        return {leaf for atom in atoms for node in nodes_of(ctx, atom) for leaf, _ in self.g.origins.get(node, ())}

    def mark_lost_reads(self, eqn, ctx, leaves: set[int]) -> None:
        """Records as read some other way every leaf of ``leaves`` (those the operands are views of) that the
        equation neither read (a contraction, a gather) nor passed on as a view, unless its result is of the data
        (the parameter joined the data, as a bias added) or a reduction's (a norm taken of it): a parameter
        rearranged in a way the rules cannot follow may be contracted later, so its fan-in is not known."""
        if eqn.primitive.name in _STATISTICS:
            return
        if any((ctx, out) in self.g.data for out in eqn.outvars):
            return
        passed = self.leaves_read(ctx, eqn.outvars)
        for leaf in leaves - passed - self.accounted:
            self.g.uses.setdefault(leaf, set()).add(("other",))

    def record_reads(self, nodes_, contracted: Sequence[int], batch: Sequence[int] = ()) -> None:
        """Records, for each parameter leaf ``nodes_`` (one operand's axes) are a view of, the leaf axes this
        contraction contracts; a leaf read along a batch axis is recorded as read some other way."""
        by_leaf: dict[int, set] = {}
        batched = set()
        for k, node in enumerate(nodes_):
            for leaf, axis in self.g.origins.get(node, ()):
                axes = by_leaf.setdefault(leaf, set())
                if k in contracted:
                    axes.add(axis)
                if k in batch:
                    batched.add(leaf)
        self.accounted.update(by_leaf)
        for leaf, axes in by_leaf.items():
            self.g.uses.setdefault(leaf, set()).add(("other",) if leaf in batched else ("contract",
                                                                                        tuple(sorted(axes))))

    def record_gather(self, nodes_) -> None:
        for node in nodes_:
            for leaf, _ in self.g.origins.get(node, ()):
                self.accounted.add(leaf)
                self.g.uses.setdefault(leaf, set()).add(("gather",))

    def fallback(self, eqn, ctx) -> None:
        """Pins every axis an operation the inference does not know touches: no group can cross it."""
        self.g.unknown.add(eqn.primitive.name)
        for atom in list(eqn.invars) + list(eqn.outvars):
            self.pin_atom(ctx, atom)

    # Structure-preserving operations.
    def op_broadcast_in_dim(self, eqn, ctx, nodes):
        (x,), (out,) = eqn.invars[:1], eqn.outvars
        # A new axis, or one broadcast from size 1, repeats the same values: any permutation leaves it as it was.
        for i, j in enumerate(eqn.params["broadcast_dimensions"]):
            if isinstance(x, jcore.Var) and x.aval.shape[i] == out.aval.shape[j]:
                self.view(nodes(x)[i], nodes(out)[j])

    def op_transpose(self, eqn, ctx, nodes):
        (x,), (out,) = eqn.invars, eqn.outvars
        for j, i in enumerate(eqn.params["permutation"]):
            self.view(nodes(x)[i], nodes(out)[j])

    def op_squeeze(self, eqn, ctx, nodes):
        (x,), (out,) = eqn.invars, eqn.outvars
        kept = [i for i in range(len(x.aval.shape)) if i not in {d % len(x.aval.shape) for d in
                                                                 eqn.params["dimensions"]}]
        for i, j in zip(kept, range(len(out.aval.shape))):
            self.view(nodes(x)[i], nodes(out)[j])

    def _reduce(self, eqn, ctx, nodes, pin_reduced: bool):
        (x,), (out,) = eqn.invars, eqn.outvars
        reduced = set(eqn.params["axes"])
        kept = [i for i in range(len(x.aval.shape)) if i not in reduced]
        for i, j in zip(kept, range(len(out.aval.shape))):
            self.g.join(nodes(x)[i], nodes(out)[j])
        if pin_reduced:  # an index into the reduced axis names its positions
            self.pin([nodes(x)[i] for i in reduced])

    def op_argmax(self, eqn, ctx, nodes):
        self._reduce(eqn, ctx, nodes, pin_reduced=True)

    op_argmin = op_argmax

    def _ordered(self, eqn, ctx, nodes):
        """An op along one axis that reads its order (a cumulative sum): that axis is pinned, the others kept."""
        (x,), (out,) = eqn.invars, eqn.outvars
        for k, (xn, on) in enumerate(zip(nodes(x), nodes(out))):
            if k == eqn.params["axis"]:
                self.pin([xn, on])
            else:
                self.g.join(xn, on)

    def op_iota(self, eqn, ctx, nodes):
        (out,) = eqn.outvars
        self.pin([nodes(out)[eqn.params["dimension"]]])

    def op_dot_general(self, eqn, ctx, nodes):
        lhs, rhs = eqn.invars
        (out,) = eqn.outvars
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        ln, rn, on = nodes(lhs), nodes(rhs), nodes(out)
        if not ln or not rn:
            self.fallback(eqn, ctx)
            return
        self.record_reads(ln, lc, lb)
        self.record_reads(rn, rc, rb)
        for i, j in zip(lc, rc):
            self.g.join(ln[i], rn[j])
        for k, (i, j) in enumerate(zip(lb, rb)):
            self.g.join(ln[i], on[k])
            self.g.join(rn[j], on[k])
        free = [ln[i] for i in range(len(ln)) if i not in lc and i not in lb]
        free += [rn[j] for j in range(len(rn)) if j not in rc and j not in rb]
        for k, node in enumerate(free, start=len(lb)):
            self.g.join(node, on[k])

    def op_conv_general_dilated(self, eqn, ctx, nodes):
        lhs, rhs = eqn.invars
        (out,) = eqn.outvars
        p = eqn.params
        dn = p["dimension_numbers"]
        ln, rn, on = nodes(lhs), nodes(rhs), nodes(out)
        if p["batch_group_count"] != 1 or not ln or not rn:
            self.fallback(eqn, ctx)
            return
        self.record_reads(rn, (dn.rhs_spec[1],) + tuple(dn.rhs_spec[2:]))
        self.record_reads(ln, (dn.lhs_spec[1],) + tuple(dn.lhs_spec[2:]), (dn.lhs_spec[0],))
        self.g.join(ln[dn.lhs_spec[0]], on[dn.out_spec[0]])
        self.pin([ln[i] for i in dn.lhs_spec[2:]] + [rn[i] for i in dn.rhs_spec[2:]] + [on[i] for i in dn.out_spec[2:]])
        if p["feature_group_count"] == 1:
            self.g.join(ln[dn.lhs_spec[1]], rn[dn.rhs_spec[1]])
            self.g.join(rn[dn.rhs_spec[0]], on[dn.out_spec[1]])
        elif (p["feature_group_count"] == lhs.aval.shape[dn.lhs_spec[1]] == out.aval.shape[dn.out_spec[1]]
              and rhs.aval.shape[dn.rhs_spec[1]] == 1):
            # Depthwise, one filter a channel: a channel's filter moves with it, so input, filter and output
            # channels are one axis.
            self.g.join(ln[dn.lhs_spec[1]], rn[dn.rhs_spec[0]])
            self.g.join(rn[dn.rhs_spec[0]], on[dn.out_spec[1]])
        else:  # grouped: channels move in blocks, which one label per axis cannot say
            self.g.relations.append(([ln[dn.lhs_spec[1]], rn[dn.rhs_spec[1]]],
                                     [rn[dn.rhs_spec[0]], on[dn.out_spec[1]]]))

    # Operations that merge, split or cut an axis: its positions are fixed, width kept where a group feeds it.
    def op_reshape(self, eqn, ctx, nodes):
        x = eqn.invars[0]
        (out,) = eqn.outvars
        if eqn.params.get("dimensions") is not None:
            self.fallback(eqn, ctx)
            return
        xs, os = list(x.aval.shape), list(out.aval.shape)
        xn, on = nodes(x), nodes(out)
        i = j = 0
        while i < len(xs) or j < len(os):
            # Size-1 axes carry no permutation: skip them on either side.
            if i < len(xs) and xs[i] == 1:
                i += 1
                continue
            if j < len(os) and os[j] == 1:
                j += 1
                continue
            if i == len(xs) or j == len(os):
                break
            a, b = [i], [j]
            pa, pb = xs[i], os[j]
            while pa != pb:
                if pa < pb:
                    i += 1
                    a.append(i)
                    pa *= xs[i]
                else:
                    j += 1
                    b.append(j)
                    pb *= os[j]
            if len(a) == 1 and len(b) == 1:
                self.view(xn[a[0]], on[b[0]])
            else:
                self.g.relations.append(([xn[k] for k in a if xs[k] > 1], [on[k] for k in b if os[k] > 1]))
                for k in b:
                    self.rearranged(ctx, out, [xn[m] for m in a], on[k])
            i, j = a[-1] + 1, b[-1] + 1

    def op_concatenate(self, eqn, ctx, nodes):
        (out,) = eqn.outvars
        axis = eqn.params["dimension"]
        parts = []
        for atom in eqn.invars:
            n = nodes(atom)
            if not n:
                self.fallback(eqn, ctx)
                return
            for k in range(len(n)):
                if k != axis:
                    self.kept_whole(ctx, out, n[k], nodes(out)[k])
            parts.append(n[axis])
        self.g.relations.append((parts, [nodes(out)[axis]]))
        self.rearranged(ctx, out, parts, nodes(out)[axis])

    def _cut(self, eqn, ctx, nodes, changed: Sequence[bool]):
        """Joins the axes an op keeps whole and records a cut of the others (a slice, a pad, a reversal)."""
        x = eqn.invars[0]
        (out,) = eqn.outvars
        for k, (xn, on) in enumerate(zip(nodes(x), nodes(out))):
            if changed[k]:
                self.g.relations.append(([xn], [on]))
                self.rearranged(ctx, out, [xn], on)
            else:
                self.kept_whole(ctx, out, xn, on)

    def op_tile(self, eqn, ctx, nodes):
        """An axis tiled once is kept whole; one of size 1 repeats one value (a broadcast, as a class token tiled
        over the batch), which any permutation leaves as it was; any other is laid out again, a merge."""
        x = eqn.invars[0]
        (out,) = eqn.outvars
        xn, on = nodes(x), nodes(out)
        if not xn:
            self.fallback(eqn, ctx)
            return
        for k, (reps, size) in enumerate(zip(eqn.params["reps"], x.aval.shape)):
            if reps == 1:
                self.kept_whole(ctx, out, xn[k], on[k])
            elif size > 1:
                self.g.relations.append(([xn[k]], [on[k]]))
                self.rearranged(ctx, out, [xn[k]], on[k])

    def op_slice(self, eqn, ctx, nodes):
        x = eqn.invars[0]
        p = eqn.params
        strides = p["strides"] or (1,) * len(x.aval.shape)
        self._cut(eqn, ctx, nodes, [not (s == 0 and e == n and st == 1) for s, e, st, n in
                                    zip(p["start_indices"], p["limit_indices"], strides, x.aval.shape)])

    def op_pad(self, eqn, ctx, nodes):
        self._cut(eqn, ctx, nodes, [tuple(c) != (0, 0, 0) for c in eqn.params["padding_config"]])

    def op_rev(self, eqn, ctx, nodes):
        self._cut(eqn, ctx, nodes, [k in eqn.params["dimensions"] for k in range(len(eqn.invars[0].aval.shape))])

    def op_dynamic_slice(self, eqn, ctx, nodes):
        x = eqn.invars[0]
        (out,) = eqn.outvars
        for xn, on, n in zip(nodes(x), nodes(out), x.aval.shape):
            if on[1].aval.shape[on[2]] == n:
                self.kept_whole(ctx, out, xn, on)
            else:  # a start read from the data: the positions it picks are pinned
                self.pin([xn, on])
                self.rearranged(ctx, out, [xn], on)

    def op_gather(self, eqn, ctx, nodes):
        operand, indices = eqn.invars
        (out,) = eqn.outvars
        dn, sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
        if not nodes(operand) or not nodes(indices):
            self.fallback(eqn, ctx)
            return
        on, xn, idx = nodes(out), nodes(operand), nodes(indices)
        for k, i in zip(dn.operand_batching_dims, dn.start_indices_batching_dims):  # take_along_axis's batch
            self.g.join(xn[k], idx[i])
        offset_operand = [k for k in range(len(xn))
                          if k not in dn.collapsed_slice_dims and k not in dn.operand_batching_dims]
        whole = []
        for k, j in zip(offset_operand, dn.offset_dims):
            if k in dn.start_index_map or sizes[k] != operand.aval.shape[k]:
                self.pin([xn[k], on[j]])
            else:
                self.g.join(xn[k], on[j])
                whole.append((k, j))
        if len(whole) >= 2 and any(self.g.origins.get(xn[k]) for k, _ in whole):
            # A whole matrix picked per index (a mixture of experts' weights), not a row looked up: the pick is a
            # view of the matrix, so the contraction that reads it gives the leaf's fan-in.
            for k, j in whole:
                self._add_origins([xn[k]], on[j])
            self.accounted.update(leaf for k, _ in whole for leaf, _ in self.g.origins.get(xn[k], ()))
        else:
            self.record_gather(xn)
        self.pin([xn[k] for k in dn.start_index_map])
        batch_out = [j for j in range(len(on)) if j not in dn.offset_dims]
        for i, j in zip(range(len(idx) - 1), batch_out):
            self.g.join(idx[i], on[j])
        self.pin(idx[-1:])

    def _window(self, eqn, ctx, nodes):
        """A pooling window: axes it slides over are pinned (spatial), axes of window 1 kept."""
        x = eqn.invars[-1] if eqn.primitive.name == "reduce_window" else eqn.invars[0]
        (out,) = eqn.outvars[-1:]
        p = eqn.params
        for k, (xn, on) in enumerate(zip(nodes(x), nodes(out))):
            whole = (p["window_dimensions"][k] == 1 and p["window_strides"][k] == 1
                     and tuple(p["padding"][k]) == (0, 0) and p["base_dilation"][k] == 1)
            if whole:
                self.g.join(xn, on)
            else:
                self.pin([xn, on])

    op_reduce_window_sum = op_reduce_window_max = op_reduce_window_min = _window

    def op_split(self, eqn, ctx, nodes):
        x = eqn.invars[0]
        axis = eqn.params["axis"]
        xn = nodes(x)
        for out in eqn.outvars:
            on = nodes(out)
            for k in range(len(xn)):
                if k != axis:
                    self.kept_whole(ctx, out, xn[k], on[k])
            self.rearranged(ctx, out, [xn[axis]], on[axis])
        self.g.relations.append(([xn[axis]], [nodes(out)[axis] for out in eqn.outvars]))

    def _scatter(self, eqn, ctx, nodes):
        """A scatter writes ``updates`` into ``operand`` at ``indices`` (``x.at[i].set``, ``segment_sum``): the
        indexed operand axes are pinned, the others run through to the result, each window axis of the updates
        joins the operand axis it fills whole, and the updates' scatter axes join the indices' batch axes."""
        operand, indices, updates = eqn.invars[:3]
        (out,) = eqn.outvars
        dn = eqn.params["dimension_numbers"]
        xn, idx, un, on = nodes(operand), nodes(indices), nodes(updates), nodes(out)
        if dn.operand_batching_dims or not un or len(xn) != len(on):
            self.fallback(eqn, ctx)
            return
        indexed = set(dn.scatter_dims_to_operand_dims)
        for k, (x, o) in enumerate(zip(xn, on)):
            if k in indexed:
                self.pin([x, o])
            else:
                self.g.join(x, o)
        window_operand = [k for k in range(len(on)) if k not in dn.inserted_window_dims]
        for k, j in zip(window_operand, dn.update_window_dims):
            if k in indexed or updates.aval.shape[j] != out.aval.shape[k]:
                self.pin([un[j], on[k]])
            else:
                self.g.join(un[j], on[k])
        scatter_axes = [j for j in range(len(un)) if j not in dn.update_window_dims]
        for i, j in zip(range(len(idx) - 1), scatter_axes):
            self.g.join(idx[i], un[j])
        self.pin(idx[-1:])


for _name in ("scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter_mul", "scatter-min", "scatter_min",
              "scatter-max", "scatter_max"):
    setattr(AxisRules, "op_" + _name, AxisRules._scatter)
for _name in _REDUCTIONS:
    setattr(AxisRules, "op_" + _name, lambda self, eqn, ctx, nodes: self._reduce(eqn, ctx, nodes, False))
for _name in _ORDERED_ALONG_AXIS:
    setattr(AxisRules, "op_" + _name, AxisRules._ordered)
