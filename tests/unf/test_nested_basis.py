"""Nested groups (per-layer groups of stacked layers): the basis counts one term per orbit of the nested group, in
both layers modes, and the fast layer built once fits any depth in the tied mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hetnet import TransformerConfig, TransformerLM
from hetnet.axes import Nested
from unf import basis, layers
from unf import spec as spec_lib

A, B = Nested("a", "L"), Nested("b", "L")
# (out_axes, in_axes, sizes); "L" is the stacking axis. Sizes keep every group at least as large as the number of axes
# carrying it in the pair, so the terms are independent.
CASES = {
    "vector-vector": (("L", A), ("L", A), {"L": 2, A: 2}),
    "matrix-matrix": (("L", A, "e"), ("L", A, "e"), {"L": 2, A: 2, "e": 2}),
    "two-nested-groups": (("L", A, B), ("L", B), {"L": 2, A: 2, B: 2}),
    "shared-to-nested": (("L", "e", A), ("e",), {"L": 2, A: 2, "e": 2}),
    "nested-to-shared": (("e",), ("L", A, "e"), {"L": 2, A: 2, "e": 2}),
    "diagonal-pair": (("L", A, A), ("L", A), {"L": 2, A: 3}),
}


def _index_generators(axes, n_out, sizes, fixed):
    """Yields maps of index tuples -> index tuples generating the group: a transposition and a cycle of every plain
    label (the stacking axis only when not fixed); of a nested label, the same within each layer index alone. Axes
    ``< n_out`` belong to the output tensor, the rest to the input tensor; each tensor has its own parent axis."""
    shifts = lambda n: [np.r_[1, 0, np.arange(2, n)] if n > 1 else np.arange(n), np.roll(np.arange(n), 1)]  # noqa: E731
    plain = {l for l in axes if l is not None and not isinstance(l, Nested) and l not in fixed}
    for label in plain:
        for perm in shifts(sizes[label]):
            yield lambda idx, label=label, perm=perm: tuple(perm[i] if l == label else i for l, i in zip(axes, idx))
    for label in {l for l in axes if isinstance(l, Nested)}:
        parents = [k for k, l in enumerate(axes) if l == label.parent]
        parent_of = {k: next(p for p in parents if (p < n_out) == (k < n_out)) for k, l in enumerate(axes) if l == label}
        for layer in range(sizes[label.parent]):
            for perm in shifts(sizes[label]):
                def move(idx, perm=perm, layer=layer, parent_of=parent_of):
                    return tuple(perm[i] if k in parent_of and idx[parent_of[k]] == layer else i
                                 for k, i in enumerate(idx))
                yield move


def count_orbits(out_axes, in_axes, sizes, fixed=()):
    """Counts orbits of the group on (out index, in index) pairs by union-find over the generators."""
    axes = tuple(out_axes) + tuple(in_axes)
    shape = tuple(sizes[l] for l in axes)
    points = list(np.ndindex(*shape))
    parent = {p: p for p in points}

    def find(p):
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for gen in _index_generators(axes, len(out_axes), sizes, fixed):
        for p in points:
            a, b = find(p), find(gen(p))
            if a != b:
                parent[a] = b
    return len({find(p) for p in points})


@pytest.mark.parametrize("mode", ["tied", "exact"])
@pytest.mark.parametrize("case", CASES)
def test_nested_term_count_equals_number_of_orbits(case, mode):
    out_axes, in_axes, sizes = CASES[case]
    fixed = ("L",) if mode == "exact" else ()
    shape = lambda axes: tuple(sizes[l] for l in axes)  # noqa: E731
    n = basis.num_terms(out_axes, in_axes, shape(out_axes), shape(in_axes), fixed)
    assert n == count_orbits(out_axes, in_axes, sizes, fixed)
    mats = basis.dense(out_axes, in_axes, shape(out_axes), shape(in_axes), fixed=fixed)
    assert len(mats) == n and np.linalg.matrix_rank(mats.reshape(n, -1)) == n


def test_nested_groups_merge_only_where_their_parents_merge():
    tied = basis.terms(("L", A), ("L", A))
    assert len(tied) == 3  # layers apart -> hidden apart; same layer -> hidden equal or apart
    for term in tied:
        blocks = {frozenset(b) for b in term.blocks}
        if frozenset({("out", 1), ("in", 1)}) in blocks:
            assert frozenset({("out", 0), ("in", 0)}) in blocks


def _lm(num_layers):
    cfg = TransformerConfig(vocab_size=5, d_model=4, num_heads=2, num_kv_heads=1, d_ff=3, num_layers=num_layers,
                            max_len=3)
    model = TransformerLM(cfg)
    return model.init(jax.random.key(num_layers)), model.axes


def _equivariance_error(layer, lp, spec, params, key):
    x = jax.tree.map(lambda w: w[..., None], params)
    perms = spec.sample(key)
    apply = jax.jit(layer.apply)
    got, want = apply(lp, spec.apply(perms, x)), spec.apply(perms, apply(lp, x))
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))


def _tied_layer_fits(depths):
    """One tied layer built on a 1-layer model's stacked blocks applies to the blocks of every depth in ``depths``
    and is equivariant there (the blocks are the part whose size depends on depth)."""
    params, axes = _lm(1)
    built = layers.EquivariantLinear(spec_lib.from_hetnet(params["blocks"], axes["blocks"], layers="tied"), 1, 2)
    lp = built.init(jax.random.key(0))
    for depth in depths:
        params, axes = _lm(depth)
        params, axes = params["blocks"], axes["blocks"]
        spec = spec_lib.from_hetnet(params, axes, layers="tied")
        layer = layers.cached_equivariant(spec, 1, 2)
        assert layer.num_terms == built.num_terms
        assert _equivariance_error(layer, lp, spec, params, jax.random.key(depth)) < 1e-4


def test_one_tied_layer_fits_1_3_and_8_layer_models_and_is_equivariant_on_each():
    _tied_layer_fits((1, 3, 8))


def test_exact_layer_is_equivariant_per_layer_but_tells_layers_apart():
    params, axes = _lm(2)
    params, axes = params["blocks"], axes["blocks"]
    spec = spec_lib.from_hetnet(params, axes)  # exact by default: the model's own symmetry
    assert spec.fixed == ("layers",)
    layer = layers.EquivariantLinear(spec, 1, 1)
    lp = layer.init(jax.random.key(0))
    assert _equivariance_error(layer, lp, spec, params, jax.random.key(1)) < 1e-4
    tied = spec_lib.from_hetnet(params, axes, layers="tied")
    swap = {"layers": jnp.array([1, 0])}
    x = jax.tree.map(lambda w: w[..., None], params)
    apply = jax.jit(layer.apply)
    got, want = apply(lp, tied.apply(swap, x)), tied.apply(swap, apply(lp, x))
    assert not all(np.allclose(a, b, atol=1e-4) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))


@pytest.mark.parametrize("mode", ["exact", "tied"])
def test_fast_layer_counts_the_basis_terms(mode):
    params, axes = _lm(2)
    spec = spec_lib.from_hetnet(params, axes, layers=mode)
    want = sum(basis.num_terms(oa, ia, os, ins, spec.fixed)
               for oa, os in zip(spec.leaf_axes, spec.leaf_shapes)
               for ia, ins in zip(spec.leaf_axes, spec.leaf_shapes))
    assert layers.EquivariantLinear(spec, 1, 1).num_terms == want


def test_bad_layers_mode_is_named():
    params, axes = _lm(1)
    with pytest.raises(ValueError, match="layers must be one of"):
        spec_lib.from_hetnet(params, axes, layers="shared")


def test_layer_view_drops_the_stacking_axis():
    params, axes = _lm(2)
    view = spec_lib.layer_view(spec_lib.from_hetnet(params, axes), "blocks")
    named = dict(zip(view.leaf_names, zip(view.leaf_axes, view.leaf_shapes)))
    assert named["['blocks']['ffn']['w_in']"] == (("embed", "blocks/mlp"), (4, 3))
    assert view.fixed == ()
