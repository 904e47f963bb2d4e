"""Equivariant and invariant layers: symmetry on random specs, agreement with a dense term-by-term reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hetnet import symmetry
from hetnet.config import TransformerConfig
from hetnet.models import TransformerLM
from tests.unf import reference
from unf import layers, spec as spec_lib

# Random-ish specs covering: a group shared by several leaves, one group on two and three axes, None axes.
SPECS = {
    "mlp": (
        [{"w": (3, 4), "b": (4,)}, {"w": (4, 5), "b": (5,)}, {"w": (5, 2), "b": (2,)}],
        [{"w": (None, 0), "b": (0,)}, {"w": (0, 1), "b": (1,)}, {"w": (1, None), "b": (None,)}],
    ),
    "shared-and-repeated": (
        {"rec": (3, 3), "cube": (3, 3, 3), "in": (2, 3), "out": (3, 4), "vec": (4,)},
        {"rec": ("h", "h"), "cube": ("h", "h", "h"), "in": (None, "h"), "out": ("h", "o"), "vec": ("o",)},
    ),
    "spatial": (
        {"conv": (2, 2, 3, 4), "dense": (4, 3)},
        {"conv": (None, None, "c0", "c1"), "dense": ("c1", None)},
    ),
}


def make_spec(name):
    shapes, labels = SPECS[name]
    params = jax.tree.map(lambda s: jnp.zeros(s), shapes, is_leaf=lambda x: isinstance(x, tuple) and all(
        isinstance(e, int) for e in x))
    return spec_lib.from_labels(params, labels)


def random_features(spec, channels, seed):
    rng = np.random.default_rng(seed)
    return spec.unflatten([rng.normal(size=shape + (channels,)).astype(np.float32) for shape in spec.leaf_shapes])


def assert_trees_close(a, b, tol=1e-4):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", SPECS)
def test_fast_layer_matches_dense_reference(name, reduction):
    spec = make_spec(name)
    layer = layers.EquivariantLinear(spec, 2, 3, reduction=reduction)
    params = layer.init(jax.random.key(0))
    # Non-zero bias rows so the bias terms are checked too.
    params = {"weights": [np.asarray(w) + 0.1 for w in params["weights"]]}
    x = random_features(spec, 2, 1)
    got = jax.jit(layer.apply)(params, x)
    assert_trees_close(got, reference.equivariant_layer(layer, params, x))
    if reduction == "mean":
        assert_trees_close(jax.jit(layer.apply_term_by_term)(params, x), got)


@pytest.mark.parametrize("name", SPECS)
def test_equivariant_layer_commutes_with_permutations(name):
    spec = make_spec(name)
    layer = layers.EquivariantLinear(spec, 2, 3)
    params = layer.init(jax.random.key(0))
    x = random_features(spec, 2, 1)
    apply = jax.jit(layer.apply)
    for seed in range(3):
        perms = spec.sample(jax.random.key(10 + seed))
        assert_trees_close(apply(params, spec.apply(perms, x)), spec.apply(perms, apply(params, x)))


@pytest.mark.parametrize("name", SPECS)
def test_invariant_layer_is_invariant(name):
    spec = make_spec(name)
    layer = layers.InvariantLinear(spec, 2, 5)
    params = layer.init(jax.random.key(0))
    x = random_features(spec, 2, 1)
    apply = jax.jit(layer.apply)
    out = apply(params, x)
    assert out.shape == (5,)
    for seed in range(3):
        perms = spec.sample(jax.random.key(10 + seed))
        np.testing.assert_allclose(apply(params, spec.apply(perms, x)), out, rtol=1e-4, atol=1e-5)


def test_layer_is_not_trivially_invariant():
    # Equivariance must not come from ignoring the input's arrangement.
    spec = make_spec("mlp")
    layer = layers.EquivariantLinear(spec, 1, 1)
    params = layer.init(jax.random.key(0))
    x = random_features(spec, 1, 1)
    perms = spec.sample(jax.random.key(2))
    apply = jax.jit(layer.apply)
    moved = apply(params, spec.apply(perms, x))
    assert not np.allclose(moved[0]["w"], apply(params, x)[0]["w"])


def test_deep_equivariant_network_composes():
    spec = make_spec("shared-and-repeated")
    l1, l2 = layers.EquivariantLinear(spec, 2, 4), layers.EquivariantLinear(spec, 4, 1)
    pw = layers.PointwiseLinear(4, 4)
    p1, p2, pp = l1.init(jax.random.key(0)), l2.init(jax.random.key(1)), pw.init(jax.random.key(2))

    @jax.jit
    def net(x):
        h = layers.pointwise(jax.nn.relu, l1.apply(p1, x))
        h = layers.pointwise(jnp.tanh, pw.apply(pp, h))
        return l2.apply(p2, h)

    x = random_features(spec, 2, 3)
    perms = spec.sample(jax.random.key(4))
    assert_trees_close(net(spec.apply(perms, x)), spec.apply(perms, net(x)))


@pytest.fixture(scope="module")
def transformer():
    cfg = TransformerConfig(vocab_size=7, d_model=4, num_heads=2, num_kv_heads=1, d_ff=6, num_layers=2, max_len=3)
    model = TransformerLM(cfg)
    params = model.init(jax.random.key(0))
    return params, model.axes, spec_lib.from_hetnet(params, model.axes)


def test_transformer_spec_layer_equivariant_under_function_preserving_elements(transformer):
    params, axes, spec = transformer
    layer = layers.EquivariantLinear(spec, 1, 2)
    lp = layer.init(jax.random.key(1))
    x = jax.tree.map(lambda w: w[..., None], params)
    apply = jax.jit(layer.apply)
    y = apply(lp, x)
    for seed in range(2):
        perms = symmetry.sample_permutations(jax.random.key(seed), params, axes)
        moved = jax.tree.map(lambda w: w[..., None], symmetry.permute(params, axes, perms))
        assert_trees_close(apply(lp, moved), spec.apply(perms, y))


def test_transformer_spec_leaves_vocab_and_positions_unpermuted(transformer):
    _, _, spec = transformer
    named = dict(zip(spec.leaf_names, spec.leaf_axes))
    assert named["['tokens']"] == (None, "embed")
    assert named["['positions']"] == (None, "embed")


def test_bad_features_are_named():
    spec = make_spec("mlp")
    layer = layers.EquivariantLinear(spec, 2, 3)
    params = layer.init(jax.random.key(0))
    x = random_features(spec, 3, 1)
    with pytest.raises(ValueError, match=r"x\[0\]\['b'\] has shape \(4, 3\); expected \(4, 2\)"):
        layer.apply(params, x)
    with pytest.raises(ValueError, match="structure"):
        layer.apply(params, {"w": 1})
    with pytest.raises(ValueError, match="c_out must be a positive int"):
        layers.EquivariantLinear(spec, 2, 0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        layers.EquivariantLinear(spec, 2, 2, reduction="max")


def test_linen_wrappers_match_pure_layers():
    from unf import linen

    spec = make_spec("mlp")
    x = random_features(spec, 2, 1)
    module = linen.EquivariantDense(spec, features=3)
    variables = module.init(jax.random.key(0), x)
    pure = layers.EquivariantLinear(spec, 2, 3)
    assert_trees_close(module.apply(variables, x), pure.apply({"weights": variables["params"]["weights"]}, x))
    perms = spec.sample(jax.random.key(1))
    assert_trees_close(module.apply(variables, spec.apply(perms, x)), spec.apply(perms, module.apply(variables, x)))

    head = linen.InvariantDense(spec, features=4)
    hv = head.init(jax.random.key(2), x)
    np.testing.assert_allclose(head.apply(hv, spec.apply(perms, x)), head.apply(hv, x), rtol=1e-4, atol=1e-5)


def test_describe_prints_the_table(capsys):
    import unf

    unf.describe(make_spec("mlp"))
    assert "total terms" in capsys.readouterr().out
