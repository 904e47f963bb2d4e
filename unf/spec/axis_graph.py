"""The axis graph :func:`unf.spec.infer` reads a spec from: every axis of every value in a jaxpr is a node, and each
operation joins the nodes it ties (an elementwise op its operands' axes, a contraction the two contracted axes, a conv
its channels), pins the nodes whose positions it fixes (constants, indices, spatial and scanned axes, an operation it
does not know) or records a merge, split or cut between them (a reshape, a concatenation, a slice)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from jax.extend import core as jcore

_ELEMENTWISE = frozenset("""
abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp conj convert_element_type copy copy_p cos cosh
digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt igamma imag integer_pow is_finite le lgamma log log1p
logistic lt max min mul ne neg nextafter not or population_count pow real reduce_precision rem round rsqrt
select_n shift_left shift_right_arithmetic shift_right_logical sign sin sinh sqrt square stop_gradient sub tan tanh
xor
""".split())
# Random draws (a dropout mask): i.i.d. noise, which any permutation of its axes leaves as likely, so they tie and
# pin nothing; keys are scalars or stacked like the layers that use them.
_RANDOM = frozenset({"random_seed", "random_fold_in", "random_split", "random_wrap", "random_unwrap", "random_bits",
                     "random_clone", "threefry2x32"})
_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
                         "reduce_xor"})
_ORDERED_ALONG_AXIS = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})
_CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
          "remat": "jaxpr", "remat2": "jaxpr", "checkpoint": "jaxpr"}


def open_jaxpr(jaxpr) -> tuple[Any, Sequence]:
    """Returns ``(open jaxpr, its consts)`` of a closed or open jaxpr."""
    if isinstance(jaxpr, jcore.ClosedJaxpr):
        return jaxpr.jaxpr, jaxpr.consts
    return jaxpr, ()


def _live_equations(jaxpr, live_out: Sequence[bool]) -> list[bool]:
    """Returns per equation whether the outputs marked ``live_out`` depend on it (or it has effects)."""
    live = {v for v, keep in zip(jaxpr.outvars, live_out) if keep and isinstance(v, jcore.Var)}
    keep = [False] * len(jaxpr.eqns)
    for i in reversed(range(len(jaxpr.eqns))):
        eqn = jaxpr.eqns[i]
        if eqn.effects or any(v in live for v in eqn.outvars):
            keep[i] = True
            live.update(v for v in eqn.invars if isinstance(v, jcore.Var))
    return keep


class AxisGraph:
    """Union-find over nodes ``(context, var, axis)``; a context is one instance of a (sub-)jaxpr being walked."""

    def __init__(self):
        self.parent: dict = {}
        self.pinned: set = set()
        # Nodes of constants (a position table, a fixed mask): they pin what they touch, but a constant is part of
        # the model and grows with it, unlike the data and the output.
        self.constant: set = set()
        self.relations: list[tuple[list, list]] = []  # (one side's nodes, the other's) of a merge, split or cut
        self.scopes: dict[int, tuple[int, ...]] = {0: ()}  # context -> the scans enclosing it
        self.scans: list[tuple[int, Any, int]] = []  # (scan id, a node of its scanned axis, its length)
        self.unknown: set[str] = set()
        # Which parameter axes a node's values are a view of (through transposes, elementwise ops, calls and
        # scans): {node: {(leaf, axis)}}, and how each leaf is read: {leaf: {("contract", axes) | ("gather",) |
        # ("other",)}}; together they give each leaf's fan-in.
        self.origins: dict = {}
        self.uses: dict[int, set] = {}
        # Values that depend on the data (``(context, var)``): an elementwise op with one among its operands (a
        # bias added to an activation) makes a value of the data, not a view of the parameter.
        self.data: set = set()
        self._members: dict | None = None
        self._contexts = itertools.count(1)

    def find(self, node):
        self.parent.setdefault(node, node)
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def join(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def members(self, root) -> list:
        """Returns the nodes of the class whose root is ``root``."""
        if self._members is None:  # read once the walk is done
            self._members = {}
            for node in self.parent:
                self._members.setdefault(self.find(node), []).append(node)
        return self._members.get(root, [])

    def new_context(self, scope: tuple[int, ...]) -> int:
        ctx = next(self._contexts)
        self.scopes[ctx] = scope
        return ctx


def nodes_of(ctx: int, atom) -> list:
    """Returns the nodes of one atom (none for a literal: a scalar, or an array whose every axis is pinned by the
    caller)."""
    if not isinstance(atom, jcore.Var):
        return []
    return [(ctx, atom, i) for i in range(len(getattr(atom.aval, "shape", ())))]


def size_of(node) -> int:
    return int(node[1].aval.shape[node[2]])


class Walker:
    def __init__(self, graph: AxisGraph):
        self.g = graph

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
        if a in self.g.origins:
            self.g.origins[b] = self.g.origins.get(b, frozenset()) | self.g.origins[a]

    def carry_data(self, ctx_a, a, ctx_b, b) -> None:
        """Marks ``b`` as data where ``a``, whose value it takes, is."""
        if isinstance(a, jcore.Var) and (ctx_a, a) in self.g.data:
            self.g.data.add((ctx_b, b))

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
        for leaf, axes in by_leaf.items():
            self.g.uses.setdefault(leaf, set()).add(("other",) if leaf in batched else ("contract",
                                                                                        tuple(sorted(axes))))

    def record_gather(self, nodes_) -> None:
        for node in nodes_:
            for leaf, _ in self.g.origins.get(node, ()):
                self.g.uses.setdefault(leaf, set()).add(("gather",))

    def walk(self, jaxpr, consts: Sequence, ctx: int, live_out: Sequence[bool] | None = None) -> None:
        """Walks one jaxpr instance in context ``ctx``; its constvars are pinned (values fixed in the trace)."""
        for v in jaxpr.constvars:
            self.pin_atom(ctx, v)
            self.g.constant.update(nodes_of(ctx, v))
        live = _live_equations(jaxpr, [True] * len(jaxpr.outvars) if live_out is None else live_out)
        for eqn, keep in zip(jaxpr.eqns, live):
            if keep:
                self.equation(eqn, ctx)

    def call(self, eqn, ctx, sub, invars=None, outvars=None, scope=None) -> int:
        """Walks ``sub`` (a called jaxpr) in a fresh context joined to the call's operands and results."""
        inner, consts = open_jaxpr(sub)
        sub_ctx = self.g.new_context(self.g.scopes[ctx] if scope is None else scope)
        invars = eqn.invars if invars is None else invars
        outvars = eqn.outvars if outvars is None else outvars
        for outer, var in zip(invars, inner.invars):
            self.join_atoms(ctx, outer, sub_ctx, var)
            self.carry_data(ctx, outer, sub_ctx, var)
            if not isinstance(outer, jcore.Var):
                self.pin_atom(sub_ctx, var)
        self.walk(inner, consts, sub_ctx)
        for outer, var in zip(outvars, inner.outvars):  # after the walk, so the results' views are known
            self.join_atoms(sub_ctx, var, ctx, outer)
            if not isinstance(var, jcore.Var):
                self.pin_atom(ctx, outer)
        return sub_ctx

    def equation(self, eqn, ctx) -> None:
        name, p = eqn.primitive.name, eqn.params
        ins, outs = eqn.invars, eqn.outvars

        def nodes(atom):
            return nodes_of(ctx, atom)

        if any(isinstance(a, jcore.Var) and (ctx, a) in self.g.data for a in ins):
            self.g.data.update((ctx, v) for v in outs)
        if name in _ELEMENTWISE:
            (out,) = outs
            shape = out.aval.shape
            # Operands have the result's rank (an axis of size 1 is broadcast) or are scalars.
            if any(len(a.aval.shape) not in (0, len(shape)) for a in ins):
                self.fallback(eqn, ctx)
                return
            of_data = (ctx, out) in self.g.data
            for atom in ins:
                for node, out_node in zip(nodes_of(ctx, atom), nodes_of(ctx, out)):
                    if size_of(node) == size_of(out_node):
                        if of_data:
                            self.g.join(node, out_node)
                        else:
                            self.view(node, out_node)
            return
        if name in _RANDOM:
            return
        if name == "bitcast_convert_type" and all(a.aval.shape == outs[0].aval.shape for a in ins):
            for node, out_node in zip(nodes(ins[0]), nodes(outs[0])):  # the same bits read as another type
                self.g.join(node, out_node)
            return
        if name in _CALLS and _CALLS[name] in p:
            self.call(eqn, ctx, p[_CALLS[name]])
            return
        handler = getattr(self, "op_" + name, None)
        if handler is None:
            self.fallback(eqn, ctx)
            return
        handler(eqn, ctx, nodes)

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
        else:  # grouped (depthwise): channels move in blocks, which one label per axis cannot say
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
                    self.g.join(n[k], nodes(out)[k])
            parts.append(n[axis])
        self.g.relations.append((parts, [nodes(out)[axis]]))

    def _cut(self, eqn, ctx, nodes, changed: Sequence[bool]):
        """Joins the axes an op keeps whole and records a cut of the others (a slice, a pad, a reversal)."""
        x = eqn.invars[0]
        (out,) = eqn.outvars
        for k, (xn, on) in enumerate(zip(nodes(x), nodes(out))):
            if changed[k]:
                self.g.relations.append(([xn], [on]))
            else:
                self.g.join(xn, on)

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
                self.g.join(xn, on)
            else:  # a start read from the data: the positions it picks are pinned
                self.pin([xn, on])

    def op_gather(self, eqn, ctx, nodes):
        operand, indices = eqn.invars
        (out,) = eqn.outvars
        dn, sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
        if not nodes(operand) or not nodes(indices):
            self.fallback(eqn, ctx)
            return
        on, xn, idx = nodes(out), nodes(operand), nodes(indices)
        self.record_gather(xn)
        for k, i in zip(dn.operand_batching_dims, dn.start_indices_batching_dims):  # take_along_axis's batch
            self.g.join(xn[k], idx[i])
        offset_operand = [k for k in range(len(xn))
                          if k not in dn.collapsed_slice_dims and k not in dn.operand_batching_dims]
        for k, j in zip(offset_operand, dn.offset_dims):
            if k in dn.start_index_map or sizes[k] != operand.aval.shape[k]:
                self.pin([xn[k], on[j]])
            else:
                self.g.join(xn[k], on[j])
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

    def op_scan(self, eqn, ctx, nodes):
        p = eqn.params
        n_consts, n_carry = p["num_consts"], p["num_carry"]
        xs = eqn.invars[n_consts + n_carry:]
        ys = eqn.outvars[n_carry:]
        scan_id = len(self.g.scans)
        inner, consts = open_jaxpr(p["jaxpr"])
        body = self.g.new_context(self.g.scopes[ctx] + (scan_id,))
        stacked = [nodes(v)[0] for v in list(xs) + list(ys) if nodes(v)]
        anchor = stacked[0] if stacked else None
        for node in stacked[1:]:
            self.g.join(anchor, node)
        self.pin(stacked)  # iterations run in order
        self.g.scans.append((scan_id, anchor, int(p["length"])))
        carry_in = eqn.invars[n_consts:n_consts + n_carry]
        for outer, var in zip(list(eqn.invars[:n_consts]) + list(carry_in), inner.invars):
            self.join_atoms(ctx, outer, body, var)
            self.carry_data(ctx, outer, body, var)
            if not isinstance(outer, jcore.Var):
                self.pin_atom(body, var)
        # A carry changes from one iteration to the next: it is read as data, never as a view of a parameter.
        self.g.data.update((body, var) for var in inner.invars[n_consts:n_consts + n_carry])
        for outer, var in zip(xs, inner.invars[n_consts + n_carry:]):
            self.carry_data(ctx, outer, body, var)
            for a, b in zip(nodes(outer)[1:], nodes_of(body, var)):  # one slice of a stacked leaf per iteration
                self.view(a, b)
        self.walk(inner, consts, body)
        for k, (outer, var) in enumerate(zip(eqn.outvars, inner.outvars)):  # after the walk: the results' views
            if k < n_carry:
                self.join_atoms(body, var, ctx, outer)
                self.join_atoms(ctx, carry_in[k], body, var)
                self.join_atoms(body, inner.invars[n_consts + k], body, var)
            else:
                for a, b in zip(nodes_of(body, var), nodes(outer)[1:]):
                    self.view(a, b)
            if not isinstance(var, jcore.Var):
                self.pin_atom(ctx, outer)

    def op_while(self, eqn, ctx, nodes):
        p = eqn.params
        nc, nb = p["cond_nconsts"], p["body_nconsts"]
        carry = eqn.invars[nc + nb:]
        self.call(eqn, ctx, p["body_jaxpr"], invars=list(eqn.invars[nc:nc + nb]) + list(carry), outvars=eqn.outvars)
        self.call(eqn, ctx, p["cond_jaxpr"], invars=list(eqn.invars[:nc]) + list(carry), outvars=[])
        for a, b in zip(carry, eqn.outvars):
            self.join_atoms(ctx, a, ctx, b)

    def op_cond(self, eqn, ctx, nodes):
        self.pin_atom(ctx, eqn.invars[0])
        for branch in eqn.params["branches"]:
            self.call(eqn, ctx, branch, invars=eqn.invars[1:])

    def op_split(self, eqn, ctx, nodes):
        x = eqn.invars[0]
        axis = eqn.params["axis"]
        xn = nodes(x)
        for out in eqn.outvars:
            on = nodes(out)
            for k in range(len(xn)):
                if k != axis:
                    self.g.join(xn[k], on[k])
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
    setattr(Walker, "op_" + _name, Walker._scatter)
for _name in _REDUCTIONS:
    setattr(Walker, "op_" + _name, lambda self, eqn, ctx, nodes: self._reduce(eqn, ctx, nodes, False))
for _name in _ORDERED_ALONG_AXIS:
    setattr(Walker, "op_" + _name, Walker._ordered)
