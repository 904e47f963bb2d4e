"""The complete basis of permutation-equivariant linear maps between two weight tensors.

For an output tensor with axis labels ``out_axes`` and an input tensor with ``in_axes``, every basis term is a
partition of the combined permuted axes into blocks whose axes share one label. A term reads the input's diagonal
where a block holds several input axes, averages over blocks with input axes only, broadcasts over blocks with
output axes only, and writes the output's diagonal where a block holds several output axes. An unpermuted (``None``)
axis is its own block: every output position along it meets every input position, so each (output index, input
index) pair of ``None`` axes is a separate term (the fast layers fold these axes into channels).

When every group's size is at least the number of axes carrying it, the terms are linearly independent and span the
equivariant maps: there is one per orbit of the group on (output index, input index) pairs.

Nested groups (:class:`hetnet.axes.Nested`, a per-layer group of stacked layers): each layer index permutes the group
independently, so an output axis and an input axis of one nested group may share a block only where their parent
(stacking) axes index the same layer: when the parent is a permuted label, only where the parents share a block;
when the parent is *fixed* (not permuted, the layers told apart), only for the (output, input) index pairs of equal
parent index.
"""

from __future__ import annotations

import dataclasses
import itertools
import string
from collections.abc import Hashable, Iterator, Sequence

import numpy as np

from hetnet.axes import Nested

Item = tuple[str, int]  # ("out" | "in", axis position in that tensor)


def set_partitions(items: Sequence) -> Iterator[list[list]]:
    """Yields every partition of ``items`` into non-empty blocks; blocks keep the items' order."""
    items = list(items)
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        yield [[first], *partition]
        for i in range(len(partition)):
            yield [*partition[:i], [first, *partition[i]], *partition[i + 1 :]]


@dataclasses.dataclass(frozen=True)
class Term:
    """One basis term: ``blocks`` partitions the permuted axes of the output and input tensors.

    Each block is a tuple of items ``("out", axis)`` / ``("in", axis)``, all carrying one label.
    """

    out_axes: tuple
    in_axes: tuple
    blocks: tuple[tuple[Item, ...], ...]

    def block_kind(self, block: tuple[Item, ...]) -> str:
        """Returns ``"linked"`` (input and output axes), ``"reduced"`` (input only) or ``"broadcast"`` (output only)."""
        sides = {side for side, _ in block}
        return "linked" if len(sides) == 2 else ("reduced" if sides == {"in"} else "broadcast")

    def formula(self, reduction: str = "mean") -> str:
        """Returns the term as an einsum-like line, e.g. ``Y[a,b] += mean_c X[a,c,c]``; ``·`` marks a None axis."""
        letter = {}
        for name, block in zip(string.ascii_lowercase, self.blocks):
            for item in block:
                letter[item] = name
        out = ",".join(letter.get(("out", i), "·") for i in range(len(self.out_axes)))
        inp = ",".join(letter.get(("in", i), "·") for i in range(len(self.in_axes)))
        reduced = sorted({letter[b[0]] for b in self.blocks if self.block_kind(b) == "reduced"})
        op = f"{reduction}_{''.join(reduced)} " if reduced else ""
        return f"Y[{out}] += {op}X[{inp}]"


def _check_axes(name: str, axes: Sequence, shape: Sequence[int] | None = None) -> None:
    for label in axes:
        if label is not None and not isinstance(label, Hashable):
            raise TypeError(f"{name} labels must be hashable or None, got {label!r}.")
    if shape is not None and len(shape) != len(axes):
        raise ValueError(f"{name} has {len(axes)} labels but its shape {tuple(shape)} has {len(shape)} axes.")


def _crosses(block) -> bool:
    return len({side for side, _ in block}) == 2


def nested_ok(blocks, out_axes, in_axes, same_layer: frozenset) -> bool:
    """Whether every block linking an output and an input axis of a nested group links them within one layer: their
    parents share a block, or (for a fixed parent) the parent indices are known equal (``same_layer``)."""
    block_of = {item: k for k, block in enumerate(blocks) for item in block}
    for block in blocks:
        label = (out_axes if block[0][0] == "out" else in_axes)[block[0][1]]
        if not isinstance(label, Nested) or not _crosses(block):
            continue
        if label.parent in same_layer:
            continue
        out_parent = ("out", list(out_axes).index(label.parent))
        in_parent = ("in", list(in_axes).index(label.parent))
        if out_parent not in block_of or block_of[out_parent] != block_of.get(in_parent):
            return False
    return True


def terms(out_axes: Sequence, in_axes: Sequence, fixed: Sequence = (), same_layer: Sequence = ()) -> list[Term]:
    """Returns every basis term between a tensor labelled ``in_axes`` and one labelled ``out_axes``, in a fixed order.

    Only permuted axes take part; ``None`` axes and axes of ``fixed`` labels are handled as channels (see
    :func:`dense`). ``same_layer``: the fixed labels whose output and input indices are equal in the index pair at
    hand (a nested group hanging from one may link across the two tensors there and nowhere else).
    """
    _check_axes("out_axes", out_axes)
    _check_axes("in_axes", in_axes)
    items: dict = {}
    for side, axes in (("out", out_axes), ("in", in_axes)):
        for i, label in enumerate(axes):
            if label is not None and label not in fixed:
                items.setdefault(label, []).append((side, i))
    order = {item: k for k, item in enumerate([("out", i) for i in range(len(out_axes))]
                                               + [("in", i) for i in range(len(in_axes))])}
    per_label = [list(set_partitions(group)) for group in items.values()]
    result = []
    same_layer = frozenset(same_layer)
    for combo in itertools.product(*per_label):
        blocks = [tuple(b) for partition in combo for b in partition]
        blocks.sort(key=lambda b: order[b[0]])
        if nested_ok(blocks, out_axes, in_axes, same_layer):
            result.append(Term(tuple(out_axes), tuple(in_axes), tuple(blocks)))
    return result


def _none_positions(axes: Sequence, fixed: Sequence = ()) -> list[int]:
    return [i for i, label in enumerate(axes) if label is None or label in fixed]


def num_terms(out_axes: Sequence, in_axes: Sequence, out_shape: Sequence[int], in_shape: Sequence[int],
              fixed: Sequence = ()) -> int:
    """Returns the number of basis terms counting every (output, input) index pair of ``None`` and ``fixed`` axes
    separately (a nested group under a fixed label links across the tensors only where the parents' indices agree).
    """
    _check_axes("out_axes", out_axes, out_shape)
    _check_axes("in_axes", in_axes, in_shape)
    none_out, none_in = _none_positions(out_axes, fixed), _none_positions(in_axes, fixed)
    total = 0
    for vo in itertools.product(*[range(out_shape[i]) for i in none_out]):
        for vi in itertools.product(*[range(in_shape[i]) for i in none_in]):
            total += len(terms(out_axes, in_axes, fixed, _same_layer(out_axes, in_axes, fixed, none_out, none_in,
                                                                       vo, vi)))
    return total


def _same_layer(out_axes, in_axes, fixed, none_out, none_in, vo, vi) -> frozenset:
    """Returns the fixed labels carried by both tensors whose output and input indices are equal in ``(vo, vi)``."""
    out_index = {out_axes[p]: v for p, v in zip(none_out, vo) if out_axes[p] in fixed}
    in_index = {in_axes[p]: v for p, v in zip(none_in, vi) if in_axes[p] in fixed}
    return frozenset(label for label in out_index if in_index.get(label) == out_index[label])


def _term_mask(term: Term, grids: dict, out_shape, in_shape, reduction: str) -> np.ndarray:
    value = np.ones((), dtype=np.float64)
    for block in term.blocks:
        first = grids[block[0]]
        for item in block[1:]:
            value = value * (grids[item] == first)
        if reduction == "mean" and term.block_kind(block) == "reduced":
            side, axis = block[0]
            value = value / in_shape[axis]
    return value


def term_matrix(term: Term, out_shape: Sequence[int], in_shape: Sequence[int], reduction: str = "mean") -> np.ndarray:
    """Returns one term as a dense matrix over the permuted axes only (``None`` axes dropped), row-major:
    ``[prod(permuted out sizes), prod(permuted in sizes)]``.
    """
    out_pos = [i for i, label in enumerate(term.out_axes) if label is not None]
    in_pos = [i for i, label in enumerate(term.in_axes) if label is not None]
    sizes = [out_shape[i] for i in out_pos] + [in_shape[i] for i in in_pos]
    index = np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij", sparse=True)
    grids = {("out", p): index[k] for k, p in enumerate(out_pos)}
    grids.update({("in", p): index[len(out_pos) + k] for k, p in enumerate(in_pos)})
    m = np.broadcast_to(_term_mask(term, grids, out_shape, in_shape, reduction), sizes)
    return m.reshape(int(np.prod(sizes[: len(out_pos)])), int(np.prod(sizes[len(out_pos) :])))


def dense(
    out_axes: Sequence,
    in_axes: Sequence,
    out_shape: Sequence[int],
    in_shape: Sequence[int],
    reduction: str = "mean",
    fixed: Sequence = (),
) -> np.ndarray:
    """Returns every basis term as a dense matrix: ``[num_terms, prod(out_shape), prod(in_shape)]`` (row-major).

    Terms are ordered by the ``None`` (and ``fixed``) output indices, then input indices, then by :func:`terms`.
    Meant for tests and teaching: the size is the square of the tensors' sizes.
    """
    _check_axes("out_axes", out_axes, out_shape)
    _check_axes("in_axes", in_axes, in_shape)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    shape = tuple(out_shape) + tuple(in_shape)
    index = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij", sparse=True)
    grids = {("out", i): index[i] for i in range(len(out_shape))}
    grids.update({("in", i): index[len(out_shape) + i] for i in range(len(in_shape))})
    none_out, none_in = _none_positions(out_axes, fixed), _none_positions(in_axes, fixed)
    none_values = list(itertools.product(*[range(out_shape[i]) for i in none_out])), list(
        itertools.product(*[range(in_shape[i]) for i in none_in])
    )
    mats = []
    for vo in none_values[0]:
        for vi in none_values[1]:
            same = _same_layer(out_axes, in_axes, fixed, none_out, none_in, vo, vi)
            for term in terms(out_axes, in_axes, fixed, same):
                m = _term_mask(term, grids, out_shape, in_shape, reduction)
                for axis, v in zip(none_out, vo):
                    m = m * (grids[("out", axis)] == v)
                for axis, v in zip(none_in, vi):
                    m = m * (grids[("in", axis)] == v)
                mats.append(np.broadcast_to(m, shape).reshape(int(np.prod(out_shape)), int(np.prod(in_shape))))
    return np.stack(mats) if mats else np.zeros((0, int(np.prod(out_shape)), int(np.prod(in_shape))))


def term_count_table(spec) -> str:
    """Returns a table of the number of basis terms from every input leaf (columns) to every output leaf (rows)."""
    names = spec.leaf_names
    counts = [
        [num_terms(oa, ia, os, ins, spec.fixed) for ia, ins in zip(spec.leaf_axes, spec.leaf_shapes)]
        for oa, os in zip(spec.leaf_axes, spec.leaf_shapes)
    ]
    width = max(len(n) for n in names)
    header = " " * width + " | " + " | ".join(f"in{j}" for j in range(len(names))) + " | total"
    lines = [f"weight space: {len(names)} leaves, labels {', '.join(f'{l!r}={n}' for l, n in spec.sizes)}"]
    lines += [f"  in{j} = {n} {spec.leaf_shapes[j]} {spec.leaf_axes[j]}" for j, n in enumerate(names)]
    lines += [header, "-" * len(header)]
    for name, row in zip(names, counts):
        cells = " | ".join(f"{c:>{len(f'in{j}')}}" for j, c in enumerate(row))
        lines.append(f"{name:>{width}} | {cells} | {sum(row)}")
    lines.append(f"total terms: {sum(map(sum, counts))}")
    return "\n".join(lines)
