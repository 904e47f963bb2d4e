"""Walks a jaxpr through the axis rules (:mod:`unf.spec.axis_rules`): elementwise ops, random draws and calls here,
every other primitive by its rule; the control flow (``scan``, ``while``, ``cond``) walks its bodies in contexts of
their own, joined to the operands and results."""

from __future__ import annotations

from collections.abc import Sequence

from jax.extend import core as jcore

from unf.spec.axis_graph import live_equations, nodes_of, open_jaxpr, size_of
from unf.spec.order_rules import OrderRules

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
_CONTROL_FLOW = frozenset({"scan", "while", "cond"})
_CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
          "remat": "jaxpr", "remat2": "jaxpr", "checkpoint": "jaxpr"}


class Walker(OrderRules):
    """Walks one jaxpr and the jaxprs it calls into the graph."""

    def walk(self, jaxpr, consts: Sequence, ctx: int, live_out: Sequence[bool] | None = None) -> None:
        """Walks one jaxpr instance in context ``ctx``; its constvars are pinned (values fixed in the trace)."""
        for v in jaxpr.constvars:
            self.pin_atom(ctx, v)
            self.g.constant.update(nodes_of(ctx, v))
        live = live_equations(jaxpr, [True] * len(jaxpr.outvars) if live_out is None else live_out)
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
                for node, out_node in zip(nodes(atom), nodes(out)):
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
        if name in _CONTROL_FLOW:  # the bodies' own equations record how the parameters are read
            handler(eqn, ctx, nodes)
            return
        leaves = self.leaves_read(ctx, ins)
        self.accounted.clear()
        if handler is None:
            self.fallback(eqn, ctx)
        else:
            handler(eqn, ctx, nodes)
        if leaves:
            self.mark_lost_reads(eqn, ctx, leaves)

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
