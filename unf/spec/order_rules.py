"""Rules for operations whose result depends on the values' order along one axis (``sort``, ``top_k``) or that
write one array into another in place (``dynamic_update_slice``, a decoding cache): the axis they reorder, select
from or write along is pinned, every other axis keeps its positions and is joined through."""

from __future__ import annotations

from unf.spec.axis_rules import AxisRules


class OrderRules(AxisRules):
    """:class:`AxisRules` and the rules of the operations that read or write positions along one axis."""

    def _along(self, eqn, ctx, nodes, axis_of) -> None:
        """Pins axis ``axis_of(rank)`` of every operand and result and joins their other axes position by position
        (operands and results of one shape, as a multi-operand sort's, or the result shorter on that axis only)."""
        atoms = [a for a in list(eqn.invars) + list(eqn.outvars) if nodes(a)]
        if not atoms:
            return
        rank = len(nodes(atoms[0]))
        if any(len(nodes(a)) != rank for a in atoms):
            self.fallback(eqn, ctx)
            return
        axis = axis_of(rank)
        first = nodes(atoms[0])
        for atom in atoms:
            for k, node in enumerate(nodes(atom)):
                if k == axis:
                    self.pin([node])
                elif atom is not atoms[0]:
                    self.kept_whole(ctx, atom, first[k], node)

    def op_sort(self, eqn, ctx, nodes):
        self._along(eqn, ctx, nodes, lambda rank: eqn.params["dimension"] % rank)

    def op_top_k(self, eqn, ctx, nodes):
        self._along(eqn, ctx, nodes, lambda rank: rank - 1)

    def op_dynamic_update_slice(self, eqn, ctx, nodes):
        operand, update, *starts = eqn.invars
        (out,) = eqn.outvars
        for a_node, o_node in zip(nodes(operand), nodes(out)):
            self.kept_whole(ctx, out, a_node, o_node)
        for k, (u_node, o_node) in enumerate(zip(nodes(update), nodes(out))):
            if update.aval.shape[k] == out.aval.shape[k]:
                self.kept_whole(ctx, out, u_node, o_node)
            else:  # written at a start the trace may read from the data: the positions are fixed
                self.pin([u_node, o_node])
        for start in starts:
            self.pin_atom(ctx, start)
