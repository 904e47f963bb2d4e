"""The basis is equivariant, complete and minimal: one independent term per orbit of (output, input) index pairs."""

import itertools

import numpy as np
import pytest

from unf import basis

# (out_axes, in_axes, sizes of labels); every group's size is at least the number of axes carrying it in the pair.
CASES = {
    "vector-vector": (("a",), ("a",), {"a": 3}),
    "matrix-vector": (("a", "b"), ("b",), {"a": 2, "b": 3}),
    "matrix-matrix": (("a", "b"), ("a", "b"), {"a": 2, "b": 3}),
    "transpose-like": (("a", "b"), ("b", "a"), {"a": 2, "b": 2}),
    "recurrent-kernel": (("h", "h"), ("h",), {"h": 3}),
    "three-axes-one-group": (("a",), ("a", "a", "a"), {"a": 4}),
    "square-to-square": (("h", "h"), ("h", "h"), {"h": 4}),
    "with-none": (("a", None), (None, "a"), {"a": 2, None: 2}),
    "none-only": ((None,), (None, None), {None: 2}),
    "disjoint": (("a",), ("b", "b"), {"a": 2, "b": 2}),
    "scalar-out": ((), ("a", "a"), {"a": 2}),
}


def shape_of(axes, sizes):
    return tuple(sizes[a] for a in axes)


def group_generators(labels, sizes):
    """A transposition and a full cycle per label generate each symmetric group."""
    gens = []
    for label in labels:
        n = sizes[label]
        if n < 2:
            continue
        swap = np.arange(n)
        swap[[0, 1]] = [1, 0]
        gens.append({label: swap})
        gens.append({label: np.roll(np.arange(n), 1)})
    return gens


def count_orbits(out_axes, in_axes, sizes):
    """Counts orbits of the product of symmetric groups on (out index, in index) pairs with union-find."""
    axes = list(out_axes) + list(in_axes)
    shape = shape_of(axes, sizes)
    total = int(np.prod(shape))
    parent = np.arange(total)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    idx = np.array(np.unravel_index(np.arange(total), shape)) if shape else np.zeros((0, 1), int)
    for gen in group_generators({a for a in axes if a is not None}, sizes):
        moved = idx.copy()
        for k, label in enumerate(axes):
            if label in gen:
                moved[k] = gen[label][idx[k]]
        targets = np.ravel_multi_index(tuple(moved), shape) if shape else np.zeros(1, int)
        for i, j in zip(range(total), targets):
            ri, rj = find(i), find(int(j))
            if ri != rj:
                parent[ri] = rj
    return len({find(i) for i in range(total)})


def permutation_matrix(axes, sizes, perms):
    mats = []
    for label in axes:
        n = sizes[label]
        p = perms.get(label, np.arange(n)) if label is not None else np.arange(n)
        mats.append(np.eye(n)[p])
    out = np.ones((1, 1))
    for m in mats:
        out = np.kron(out, m)
    return out


@pytest.mark.parametrize("case", CASES)
def test_terms_count_equals_number_of_orbits(case):
    out_axes, in_axes, sizes = CASES[case]
    n = basis.num_terms(out_axes, in_axes, shape_of(out_axes, sizes), shape_of(in_axes, sizes))
    assert n == count_orbits(out_axes, in_axes, sizes)


@pytest.mark.parametrize("case", CASES)
def test_terms_are_linearly_independent(case):
    out_axes, in_axes, sizes = CASES[case]
    mats = basis.dense(out_axes, in_axes, shape_of(out_axes, sizes), shape_of(in_axes, sizes))
    flat = mats.reshape(len(mats), -1)
    assert np.linalg.matrix_rank(flat) == len(mats)


@pytest.mark.parametrize("case", CASES)
def test_every_term_is_equivariant(case):
    out_axes, in_axes, sizes = CASES[case]
    mats = basis.dense(out_axes, in_axes, shape_of(out_axes, sizes), shape_of(in_axes, sizes))
    rng = np.random.default_rng(0)
    for _ in range(3):
        perms = {label: rng.permutation(n) for label, n in sizes.items() if label is not None}
        p_out = permutation_matrix(out_axes, sizes, perms)
        p_in = permutation_matrix(in_axes, sizes, perms)
        for m in mats:
            np.testing.assert_allclose(p_out @ m, m @ p_in, atol=1e-12)


def test_small_groups_make_terms_dependent_but_still_span():
    # With size 1 < axes carrying the label, distinct partitions coincide: more terms than orbits.
    out_axes, in_axes, sizes = ("a",), ("a",), {"a": 1}
    mats = basis.dense(out_axes, in_axes, (1,), (1,))
    assert len(mats) == 2 and np.linalg.matrix_rank(mats.reshape(2, -1)) == count_orbits(out_axes, in_axes, sizes)


def test_set_partitions_follow_bell_numbers():
    assert [sum(1 for _ in basis.set_partitions(range(n))) for n in range(6)] == [1, 1, 2, 5, 15, 52]


def test_term_descriptions_are_readable():
    lines = {t.formula() for t in basis.terms(("a", "a"), ("a",))}
    assert "Y[a,a] += X[a]" in lines  # write the input vector on the diagonal
    assert "Y[a,b] += mean_c X[c]" in lines  # broadcast the mean everywhere
    assert all(line.startswith("Y[") for line in lines) and len(lines) == 5


def test_term_matrix_agrees_with_dense():
    out_axes, in_axes = ("a", "b"), ("b", "a")
    mats = basis.dense(out_axes, in_axes, (2, 3), (3, 2))
    for term, m in zip(basis.terms(out_axes, in_axes), mats):
        np.testing.assert_array_equal(basis.term_matrix(term, (2, 3), (3, 2)), m)


def test_describe_counts_every_leaf_pair():
    import jax.numpy as jnp

    from unf import spec as spec_lib

    params = [{"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}, {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}]
    table = basis.term_count_table(spec_lib.mlp(params))
    assert "total terms: 100" in table
    expected = sum(
        basis.num_terms(oa, ia, os, ins)
        for (oa, os), (ia, ins) in itertools.product(
            [((0,), (4,)), ((None, 0), (3, 4)), ((None,), (2,)), ((0, None), (4, 2))], repeat=2
        )
    )
    assert expected == 100


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="out_axes has 2 labels but its shape"):
        basis.dense(("a", "b"), ("a",), (2,), (2,))
    with pytest.raises(TypeError, match="hashable"):
        basis.terms((["x"],), ("a",))
