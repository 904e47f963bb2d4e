"""The static plan of a fast equivariant layer: which reductions to compute and how terms share matmuls.

Every basis term factors as (reduce the input) -> (mix channels) -> (place into the output):

- a *reduction* of an input leaf is a partition of its permuted axes into groups (diagonals) and a choice of groups
  that are *kept*; the others are averaged away. One reduction serves every output leaf and term that needs it.
- a *signature* of an output leaf is a partition of its permuted axes into groups and a choice of *linked* groups
  that receive an index from the input; the others are broadcast. All terms with one signature, from every input
  leaf, are concatenated along channels and mixed by one matmul before the single placement.

A term is one (signature, reduction, label-preserving bijection from kept groups to linked groups); together they
are exactly the partitions enumerated by :func:`unf.basis.terms`. ``None`` axes are folded into the channels.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

from unf.basis import Term, nested_ok, set_partitions


@dataclasses.dataclass(frozen=True)
class LeafLayout:
    """How a leaf folds into ``[*permuted axes, none axes x channels]``."""

    axes: tuple
    shape: tuple[int, ...]

    @property
    def permuted(self) -> tuple[int, ...]:
        return tuple(i for i, label in enumerate(self.axes) if label is not None)

    @property
    def unpermuted(self) -> tuple[int, ...]:
        return tuple(i for i, label in enumerate(self.axes) if label is None)

    @property
    def folded_labels(self) -> tuple:
        return tuple(self.axes[i] for i in self.permuted)

    @property
    def folded_sizes(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.permuted)

    @property
    def channel_factor(self) -> int:
        return int(np.prod([self.shape[i] for i in self.unpermuted], dtype=np.int64))


def _groupings(labels: Sequence) -> list[tuple[tuple[int, ...], ...]]:
    """Returns every partition of positions ``0..len(labels)-1`` into same-label groups, groups ordered by first."""
    by_label: dict = {}
    for pos, label in enumerate(labels):
        by_label.setdefault(label, []).append(pos)
    result = []
    for combo in itertools.product(*[list(set_partitions(p)) for p in by_label.values()]):
        groups = sorted((tuple(g) for partition in combo for g in partition), key=lambda g: g[0])
        result.append(tuple(groups))
    return result


@dataclasses.dataclass(frozen=True)
class Reduction:
    """Input leaf ``leaf`` reduced to its ``kept`` groups (indices into ``groups``, ascending)."""

    leaf: int
    groups: tuple[tuple[int, ...], ...]
    kept: tuple[int, ...]

    def kept_labels(self, layout: LeafLayout) -> tuple:
        return tuple(layout.folded_labels[self.groups[g][0]] for g in self.kept)


@dataclasses.dataclass(frozen=True)
class Contribution:
    """One term: ``reduction`` (an index into the plan's reductions, or -1 for the constant bias channel), whose kept
    axes are reordered by ``order`` to the signature's linked groups; its weight rows are ``rows``."""

    reduction: int
    order: tuple[int, ...]
    rows: tuple[int, int]
    term: Term | None  # None in a MatmulGroup, whose contributions serve several output leaves


@dataclasses.dataclass(frozen=True)
class Signature:
    """Output groups (partition of the output leaf's permuted axes) and the ``linked`` ones, ascending."""

    groups: tuple[tuple[int, ...], ...]
    linked: tuple[int, ...]
    contributions: tuple[Contribution, ...]

    @property
    def num_rows(self) -> int:
        return self.contributions[-1].rows[1] if self.contributions else 0


def _term_of(out_layout: LeafLayout, in_layout: LeafLayout, sig_groups, linked, red: Reduction, order) -> Term:
    """Returns the basis term (over the original, unfolded axis positions) that a contribution computes."""
    out_pos, in_pos = out_layout.permuted, in_layout.permuted
    blocks = []
    kept_for_linked = {linked[j]: red.kept[order[j]] for j in range(len(linked))}
    for g, group in enumerate(sig_groups):
        block = [("out", out_pos[p]) for p in group]
        if g in kept_for_linked:
            block += [("in", in_pos[p]) for p in red.groups[kept_for_linked[g]]]
        blocks.append(tuple(block))
    for g, group in enumerate(red.groups):
        if g not in red.kept:
            blocks.append(tuple(("in", in_pos[p]) for p in group))
    order_key = {("out", i): i for i in range(len(out_layout.axes))}
    order_key.update({("in", i): len(out_layout.axes) + i for i in range(len(in_layout.axes))})
    blocks.sort(key=lambda b: order_key[b[0]])
    return Term(out_layout.axes, in_layout.axes, tuple(blocks))


@dataclasses.dataclass(frozen=True)
class MatmulGroup:
    """Signatures (of any output leaves) with one linked-label sequence: their contributions, and so their
    concatenated input, are identical, so one matmul serves them all. ``members`` are ``(output leaf, signature
    index, first column, end column)`` of the group's weight matrix."""

    linked_labels: tuple
    contributions: tuple[Contribution, ...]
    members: tuple[tuple[int, int, int, int], ...]

    @property
    def num_rows(self) -> int:
        return self.contributions[-1].rows[1] if self.contributions else 0

    @property
    def num_cols(self) -> int:
        return self.members[-1][3] if self.members else 0


@dataclasses.dataclass(frozen=True)
class Plan:
    """Reductions of the input leaves; per output leaf its signatures with their contributions (terms); and the
    matmul groups that share one concatenated input among signatures."""

    in_layouts: tuple[LeafLayout, ...]
    out_layouts: tuple[LeafLayout, ...]
    c_in: int
    c_out: int
    reductions: tuple[Reduction, ...]
    signatures: tuple[tuple[Signature, ...], ...]
    groups: tuple[MatmulGroup, ...]
    bias: bool

    def group_of(self) -> dict[tuple[int, int], tuple[int, int, int]]:
        """Returns ``(output leaf, signature) -> (group, first column, end column)``."""
        return {(o, s): (g, c0, c1) for g, grp in enumerate(self.groups) for o, s, c0, c1 in grp.members}

    @property
    def num_terms(self) -> int:
        """Basis terms (not counting bias), each ``None`` index pair counted once per pair as in ``basis.dense``."""
        total = 0
        for o, sigs in enumerate(self.signatures):
            for sig in sigs:
                for c in sig.contributions:
                    if c.reduction >= 0:
                        total += self.in_layouts[self.reductions[c.reduction].leaf].channel_factor * (
                            self.out_layouts[o].channel_factor
                        )
        return total


def build_plan(
    in_layouts: Sequence[LeafLayout], out_layouts: Sequence[LeafLayout], c_in: int, c_out: int, bias: bool = True
) -> Plan:
    """Returns the plan of the complete equivariant linear map from ``in_layouts`` leaves to ``out_layouts`` leaves."""
    reductions: list[Reduction] = []
    by_kept_labels: dict = {}
    for leaf, layout in enumerate(in_layouts):
        for groups in _groupings(layout.folded_labels):
            for r in range(len(groups) + 1):
                for kept in itertools.combinations(range(len(groups)), r):
                    red = Reduction(leaf, groups, kept)
                    key = tuple(sorted(map(repr, red.kept_labels(layout))))
                    by_kept_labels.setdefault(key, []).append(len(reductions))
                    reductions.append(red)

    all_signatures = []
    for out_layout in out_layouts:
        sigs = []
        for groups in _groupings(out_layout.folded_labels):
            for r in range(len(groups) + 1):
                for linked in itertools.combinations(range(len(groups)), r):
                    linked_labels = tuple(out_layout.folded_labels[groups[g][0]] for g in linked)
                    contributions, row = [], 0
                    for ridx in by_kept_labels.get(tuple(sorted(map(repr, linked_labels))), []):
                        red = reductions[ridx]
                        layout = in_layouts[red.leaf]
                        kept_labels = red.kept_labels(layout)
                        width = layout.channel_factor * c_in
                        # every label-preserving bijection from kept groups to linked groups is one term
                        for order in itertools.permutations(range(len(kept_labels))):
                            if tuple(kept_labels[i] for i in order) != linked_labels:
                                continue
                            term = _term_of(out_layout, layout, groups, linked, red, order)
                            if not nested_ok(term.blocks, out_layout.axes, layout.axes, frozenset()):
                                continue  # a per-layer group linked across two different layers
                            contributions.append(Contribution(ridx, order, (row, row + width), term))
                            row += width
                    if bias and not linked:
                        blocks = tuple(tuple(("out", out_layout.permuted[p]) for p in g) for g in groups)
                        contributions.append(Contribution(-1, (), (row, row + 1), Term(out_layout.axes, (), blocks)))
                        row += 1
                    if contributions:
                        sigs.append(Signature(groups, linked, tuple(contributions)))
        all_signatures.append(tuple(sigs))

    grouped: dict = {}
    for o, sigs in enumerate(all_signatures):
        width = out_layouts[o].channel_factor * c_out
        for s, sig in enumerate(sigs):
            labels = tuple(out_layouts[o].folded_labels[sig.groups[g][0]] for g in sig.linked)
            entry = grouped.setdefault(labels, {"contributions": sig.contributions, "members": [], "cols": 0})
            entry["members"].append((o, s, entry["cols"], entry["cols"] + width))
            entry["cols"] += width
    groups = tuple(
        MatmulGroup(labels, tuple(dataclasses.replace(c, term=None) for c in e["contributions"]), tuple(e["members"]))
        for labels, e in grouped.items()
    )
    return Plan(
        tuple(in_layouts), tuple(out_layouts), c_in, c_out, tuple(reductions), tuple(all_signatures), groups, bias
    )
