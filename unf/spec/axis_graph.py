"""The axis graph :func:`unf.spec.infer` reads a spec from: every axis of every value in a jaxpr is a node, in a
union-find that operations join, with the nodes they pin, the merges, splits and cuts they record, and which parameter
axes each node is a view of. :mod:`unf.spec.axis_rules` says what each primitive does to it and
:mod:`unf.spec.jaxpr_walk` walks a jaxpr through those rules."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from jax.extend import core as jcore


def open_jaxpr(jaxpr) -> tuple[Any, Sequence]:
    """Returns ``(open jaxpr, its consts)`` of a closed or open jaxpr."""
    if isinstance(jaxpr, jcore.ClosedJaxpr):
        return jaxpr.jaxpr, jaxpr.consts
    return jaxpr, ()


def live_equations(jaxpr, live_out: Sequence[bool]) -> list[bool]:
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
