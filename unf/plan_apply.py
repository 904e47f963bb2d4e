"""Computing a plan's equivariant map: folding leaves, the lattice of reductions, one matmul per group, and placing
results onto diagonals and broadcasts. :mod:`unf.layers` wraps this in layers."""

from __future__ import annotations

import string
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from unf.plan import LeafLayout, Plan, Signature

_LETTERS = string.ascii_letters.replace("Z", "")


def fold(x: jax.Array, layout: LeafLayout) -> jax.Array:
    """Returns ``x: [*shape, c]`` as ``[*permuted sizes, none sizes x c]``."""
    order = layout.permuted + layout.unpermuted + (len(layout.shape),)
    x = jnp.transpose(x, order)
    return x.reshape(layout.folded_sizes + (-1,))


def unfold(y: jax.Array, layout: LeafLayout, c: int) -> jax.Array:
    """Returns the inverse of :func:`fold`: ``[*permuted sizes, none sizes x c] -> [*shape, c]``."""
    none_sizes = tuple(layout.shape[i] for i in layout.unpermuted)
    y = y.reshape(layout.folded_sizes + none_sizes + (c,))
    order = layout.permuted + layout.unpermuted + (len(layout.shape),)
    return jnp.transpose(y, np.argsort(order))


def reduce_groups(x: jax.Array, groups, kept, sizes, reduction: str) -> jax.Array:
    """Returns folded ``x`` reduced over every axis group not in ``kept`` (a multi-axis group over its diagonal);
    ``[*sizes, C] -> [*kept group sizes, C]``."""
    letter = {p: _LETTERS[g] for g, group in enumerate(groups) for p in group}
    subs_in = "".join(letter[p] for p in range(len(sizes))) + "Z"
    subs_out = "".join(_LETTERS[g] for g in kept) + "Z"
    r = jnp.einsum(f"{subs_in}->{subs_out}", x)
    if reduction == "mean":
        dropped = [sizes[groups[g][0]] for g in range(len(groups)) if g not in kept]
        if dropped:
            r = r / float(np.prod(dropped))
    return r


def _diagonal_mask(sig: Signature, sizes: tuple[int, ...]) -> np.ndarray | None:
    """Returns the 0/1 mask ``[*sizes, 1]`` (size-1 where no multi-axis group lies) of positions where every
    multi-axis group's axes share one index, or None when no group has several axes."""
    mask = None
    for group in sig.groups:
        if len(group) < 2:
            continue
        n = sizes[group[0]]
        for p in group[1:]:
            shape = [1] * (len(sizes) + 1)
            shape[group[0]], shape[p] = n, n
            eq = np.eye(n, dtype=np.float32).reshape(shape)
            mask = eq if mask is None else mask * eq
    return mask


def place(z: jax.Array, sig: Signature, sizes: tuple[int, ...]) -> jax.Array:
    """Returns ``z: [*linked group sizes, C]`` written into ``[*sizes, C]``: diagonals for multi-axis groups,
    broadcast over unlinked groups.

    Only reshapes, broadcasts and a constant mask: elementwise work that XLA fuses with the other signatures'
    placements and the accumulation into one loop per output leaf.
    """
    linked_first = {sig.groups[g][0] for g in sig.linked}
    shape = [sizes[p] if p in linked_first else 1 for p in range(len(sizes))] + [z.shape[-1]]
    out = jnp.broadcast_to(z.reshape(shape), tuple(sizes) + (z.shape[-1],))
    mask = _diagonal_mask(sig, sizes)
    return out if mask is None else out * jnp.asarray(mask, z.dtype)


def signature_weights(plan: Plan, weights: list) -> list:
    """Returns ``[[W per signature] per output leaf]``, views of the group matrices; W rows follow the signature's
    contributions, columns its output leaf's ``none x c_out`` channels."""
    where = plan.group_of()
    return [
        [weights[where[(o, s)][0]][:, where[(o, s)][1] : where[(o, s)][2]] for s in range(len(sigs))]
        for o, sigs in enumerate(plan.signatures)
    ]


def _aligned(r: jax.Array, order: tuple[int, ...]) -> jax.Array:
    return jnp.transpose(r, tuple(order) + (r.ndim - 1,))


def _reducer(plan: Plan, folded: list, reduction: str) -> Callable[[int], jax.Array]:
    """Returns ``reduced(index)``, computing each reduction once, from its cheapest parent in the lattice.

    A reduction keeping groups K is the reduction keeping K plus one more group g, reduced over g; choosing the
    smallest such g reads the smallest parent, so a leaf with q axes costs about one pass over the input per axis
    rather than one per kept-subset (2^q).
    """
    index = {(r.leaf, r.groups, r.kept): i for i, r in enumerate(plan.reductions)}
    cache: dict[int, jax.Array] = {}

    def reduced(idx: int) -> jax.Array:
        if idx in cache:
            return cache[idx]
        red = plan.reductions[idx]
        sizes = plan.in_layouts[red.leaf].folded_sizes
        dropped = [g for g in range(len(red.groups)) if g not in red.kept]
        if not dropped:
            out = reduce_groups(folded[red.leaf], red.groups, red.kept, sizes, reduction)
        else:
            g = min(dropped, key=lambda k: sizes[red.groups[k][0]])
            parent_kept = tuple(sorted(red.kept + (g,)))
            parent = reduced(index[(red.leaf, red.groups, parent_kept)])
            axis = parent_kept.index(g)
            out = jnp.mean(parent, axis=axis) if reduction == "mean" else jnp.sum(parent, axis=axis)
        cache[idx] = out
        return out

    return reduced


def apply_plan(plan: Plan, weights, xs: list, reduction: str) -> list:
    """Returns the output leaves ``[*shape, c_out]`` of the plan's map on input leaves ``xs`` (``[*shape, c_in]``),
    each reduction computed once (:func:`_reducer`) and each matmul group applied in one product."""
    folded = [fold(x, layout) for x, layout in zip(xs, plan.in_layouts)]
    reduced = _reducer(plan, folded, reduction)

    dtype = folded[0].dtype if folded else jnp.float32
    acc: list = [None] * len(plan.out_layouts)
    for grp, w in zip(plan.groups, weights):
        parts = [jnp.ones((1,), dtype) if c.reduction < 0 else _aligned(reduced(c.reduction), c.order)
                 for c in grp.contributions]
        z = jnp.concatenate(parts, axis=-1) @ w.astype(dtype)
        for o, s, c0, c1 in grp.members:
            placed = place(z[..., c0:c1], plan.signatures[o][s], plan.out_layouts[o].folded_sizes)
            acc[o] = placed if acc[o] is None else acc[o] + placed
    outputs = []
    for a, layout in zip(acc, plan.out_layouts):
        if a is None:
            a = jnp.zeros(layout.folded_sizes + (layout.channel_factor * plan.c_out,), dtype)
        outputs.append(unfold(a, layout, plan.c_out))
    return outputs


def apply_term_by_term(plan: Plan, weights, xs: list, reduction: str) -> list:
    """Returns what :func:`apply_plan` returns, one basis term at a time with no shared work: the slow, obvious
    reference the fast path is tested and timed against."""
    folded = [fold(x, layout) for x, layout in zip(xs, plan.in_layouts)]
    dtype = folded[0].dtype if folded else jnp.float32
    outputs = []
    for sigs, layout, leaf_weights in zip(plan.signatures, plan.out_layouts, signature_weights(plan, weights)):
        acc = jnp.zeros(layout.folded_sizes + (layout.channel_factor * plan.c_out,), dtype)
        for sig, w in zip(sigs, leaf_weights):
            for c in sig.contributions:
                rows = w[c.rows[0] : c.rows[1]].astype(dtype)
                if c.reduction < 0:
                    z = rows[0]
                else:
                    red = plan.reductions[c.reduction]
                    sizes = plan.in_layouts[red.leaf].folded_sizes
                    r = reduce_groups(folded[red.leaf], red.groups, red.kept, sizes, reduction)
                    z = _aligned(r, c.order) @ rows
                acc = acc + place(z, sig, layout.folded_sizes)
        outputs.append(unfold(acc, layout, plan.c_out))
    return outputs
