"""Specs from flax logical axis names are sound: permuting the params by any sampled group element keeps the
function, for an nnx transformer, an nnx MLP and a linen model; and layers order by number, not by string."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hetnet.axes import Nested
from unf import spec as spec_lib


def kernel(*names):
    return nnx.with_partitioning(nnx.initializers.normal(0.5), names, eager_sharding=False)


class Block(nnx.Module):
    def __init__(self, d, heads, hd, ff, rngs):
        self.heads, self.hd = heads, hd
        self.norm = nnx.Param(1.0 + 0.1 * jax.random.normal(rngs.params(), (d,)), out_sharding=("embed",),
                              eager_sharding=False)
        self.q = nnx.Param(kernel("embed", "heads", "kv")(rngs.params(), (d, heads, hd)))
        self.k = nnx.Param(kernel("embed", "heads", "kv")(rngs.params(), (d, heads, hd)))
        self.v = nnx.Param(kernel("embed", "heads", "kv")(rngs.params(), (d, heads, hd)))
        self.o = nnx.Param(kernel("heads", "kv", "embed")(rngs.params(), (heads, hd, d)))
        self.w_in = nnx.Linear(d, ff, kernel_init=kernel("embed", "mlp"), bias_init=kernel("mlp"), rngs=rngs)
        self.w_out = nnx.Linear(ff, d, kernel_init=kernel("mlp", "embed"), use_bias=False, rngs=rngs)

    def __call__(self, x):
        h = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * self.norm[...][None, None]
        q, k, v = (jnp.einsum("bsd,dhk->bshk", h, w[...]) for w in (self.q, self.k, self.v))
        a = jax.nn.softmax(jnp.einsum("bshk,bthk->bhst", q, k) / np.sqrt(self.hd), axis=-1)
        x = x + jnp.einsum("bhst,bthk,hkd->bsd", a, v, self.o[...])
        return x + self.w_out(jax.nn.gelu(self.w_in(x)))


class TinyLM(nnx.Module):
    def __init__(self, rngs, vocab=11, d=8, heads=2, hd=3, ff=10, layers=2):
        self.embed = nnx.Param(kernel("vocab", "embed")(rngs.params(), (vocab, d)))
        self.blocks = nnx.List([Block(d, heads, hd, ff, rngs) for _ in range(layers)])
        self.unembed = nnx.Param(kernel("embed", "vocab")(rngs.params(), (d, vocab)))

    def __call__(self, tokens):
        x = self.embed[...][tokens]
        for block in self.blocks:
            x = block(x)
        return x @ self.unembed[...]


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(5, 7, kernel_init=kernel(None, "hidden_1"), bias_init=kernel("hidden_1"), rngs=rngs)
        self.l2 = nnx.Linear(7, 6, kernel_init=kernel("hidden_1", "hidden_2"), bias_init=kernel("hidden_2"), rngs=rngs)
        self.l3 = nnx.Linear(6, 3, kernel_init=kernel("hidden_2", None), use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.l3(jax.nn.relu(self.l2(jax.nn.relu(self.l1(x)))))


def assert_permutations_keep_the_function(model, spec, x, seeds=3):
    graphdef, param_state, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(param_state)

    def apply(p):
        state = nnx.state(model, nnx.Param)
        nnx.replace_by_pure_dict(state, p)
        return nnx.merge(graphdef, state, rest)(x)

    want = apply(params)
    for seed in range(seeds):
        moved = spec.apply(spec.sample(jax.random.key(seed)), params)
        assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(params)))
        np.testing.assert_allclose(apply(moved), want, rtol=1e-4, atol=1e-5)


def test_nnx_transformer_spec_keeps_the_function():
    model = TinyLM(nnx.Rngs(0))
    spec = spec_lib.from_flax(model)
    named = dict(zip(spec.leaf_names, spec.leaf_axes))
    assert named["['blocks'][1]['w_in']['kernel']"] == ("embed", "blocks/1/mlp")
    assert named["['blocks'][0]['o']"] == ("blocks/0/heads", "blocks/0/kv", "embed")
    assert named["['embed']"] == (None, "embed")
    assert_permutations_keep_the_function(model, spec, jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]]))


def test_nnx_mlp_with_named_hidden_axes_keeps_the_function():
    model = MLP(nnx.Rngs(1))
    spec = spec_lib.from_flax(model, rules={"hidden_1": "shared", "hidden_2": "shared"})
    assert dict(spec.sizes) == {"hidden_1": 7, "hidden_2": 6}
    assert_permutations_keep_the_function(model, spec, jax.random.normal(jax.random.key(0), (4, 5)))


def test_linen_logical_names():
    class Linen(nn.Module):
        @nn.compact
        def __call__(self, x):
            named = lambda *n: nn.with_logical_partitioning(nn.initializers.normal(0.5), n)  # noqa: E731
            x = nn.Dense(6, kernel_init=named("embed", "mlp"), bias_init=named("mlp"))(x)
            return nn.Dense(3, kernel_init=named("mlp", "vocab"), use_bias=False)(jax.nn.relu(x))

    x = jax.random.normal(jax.random.key(0), (2, 4))
    model = Linen()
    variables = model.init(jax.random.key(1), x)
    spec = spec_lib.from_flax(variables, rules={**spec_lib.FLAX_RULES, "embed": "unpermuted"})
    params = nn.unbox(variables)
    assert dict(spec.sizes) == {"mlp": 6}  # Dense_0 and Dense_1 are sublayers of one layer: one group
    for seed in range(2):
        moved = spec.apply(spec.sample(jax.random.key(seed)), params)
        np.testing.assert_allclose(model.apply(moved, x), model.apply(params, x), rtol=1e-5, atol=1e-6)


def test_scanned_linen_layers_get_per_layer_nested_groups():
    """A linen model whose layers are stacked over a "layers" axis (as nn.scan makes them): each layer's MLP units
    are a group of their own, permuted independently; the exact spec keeps layers in place."""
    depth, d, f = 3, 4, 5

    class Stacked(nn.Module):
        @nn.compact
        def __call__(self, x):
            named = lambda *n: nn.with_logical_partitioning(nn.initializers.normal(0.5), n)  # noqa: E731
            w_in = self.param("w_in", named("layers", "embed", "mlp"), (depth, d, f))
            b_in = self.param("b_in", named("layers", "mlp"), (depth, f))
            w_out = self.param("w_out", named("layers", "mlp", "embed"), (depth, f, d))
            for i in range(depth):
                x = x + jnp.tanh(x @ w_in[i] + b_in[i][None]) @ w_out[i]
            return x

    x = jax.random.normal(jax.random.key(0), (2, d))
    model = Stacked()
    variables = model.init(jax.random.key(1), x)
    params = nn.unbox(variables)
    rules = {**spec_lib.FLAX_RULES, "embed": "unpermuted"}  # the input enters the residual stream unembedded
    spec = spec_lib.from_flax(variables, rules)
    assert spec.fixed == ("layers",) and Nested("mlp") in dict(spec.sizes)
    for seed in range(2):
        perms = spec.sample(jax.random.key(seed))
        assert perms[Nested("mlp")].shape == (depth, f)
        moved = spec.apply(perms, params)
        np.testing.assert_allclose(model.apply(moved, x), model.apply(params, x), rtol=1e-5, atol=1e-6)
    assert spec_lib.from_flax(variables, rules, layers="tied").fixed == ()


def test_missing_names_and_unknown_names_are_refused():
    class Bare(nnx.Module):
        def __init__(self, rngs):
            self.l = nnx.Linear(3, 4, kernel_init=kernel("embed", "mlp"), rngs=rngs)

    with pytest.raises(ValueError, match=r"1 params leaves lack a logical name(.|\n)*\['l'\]\['bias'\] \(4,\): none"):
        spec_lib.from_flax(Bare(nnx.Rngs(0)))
    spec = spec_lib.from_flax(Bare(nnx.Rngs(0)), overrides={"['l']['bias']": ("mlp",)})
    assert dict(spec.sizes) == {"embed": 3, "mlp": 4}
    with pytest.raises(ValueError, match="do not define the logical names 'hidden_1'"):
        spec_lib.from_flax(MLP(nnx.Rngs(0)))
    with pytest.raises(ValueError, match="overrides name leaves the params lack"):
        spec_lib.from_flax(Bare(nnx.Rngs(0)), overrides={"['l']['bias']": ("mlp",), "['nope']": ("mlp",)})
    with pytest.raises(TypeError, match="nnx Module or State, or linen variables"):
        spec_lib.from_flax([1, 2])


def test_mlp_layers_order_by_number_after_a_tree_map():
    class Deep(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(11):
                x = jax.nn.relu(nn.Dense(4)(x))
            return nn.Dense(2)(x)

    x = jax.random.normal(jax.random.key(0), (3, 4))
    model = Deep()
    variables = jax.tree.map(lambda a: a, model.init(jax.random.key(1), x))  # keys now sorted: Dense_10 < Dense_2
    assert list(variables["params"])[:3] == ["Dense_0", "Dense_1", "Dense_10"]
    spec = spec_lib.mlp(variables)
    named = dict(zip(spec.leaf_names, spec.leaf_axes))
    assert named["['params']['Dense_2']['kernel']"] == (1, 2)
    assert named["['params']['Dense_10']['kernel']"] == (9, 10)
    moved = spec.apply(spec.sample(jax.random.key(3)), variables)
    np.testing.assert_allclose(model.apply(moved, x), model.apply(variables, x), rtol=1e-4, atol=1e-5)


def test_feedforward_specs_take_an_nnx_model_its_state_and_boxed_linen_variables():
    class Stack(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(3 if i == 0 else 5, 5 if i < 10 else 2, rngs=rngs) for i in range(11)])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            return self.layers[-1](x)

    model = Stack(nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    x = jax.random.normal(jax.random.key(1), (4, 3))
    for given in (model, nnx.state(model, nnx.Param)):
        spec = spec_lib.mlp(given)
        named = dict(zip(spec.leaf_names, spec.leaf_axes))
        assert named["['layers'][10]['kernel']"] == (9, None)  # layer 10 last, not after layer 1
        moved = spec.apply(spec.sample(jax.random.key(2)), params)
        permuted = Stack(nnx.Rngs(0))
        nnx.update(permuted, nnx.State(moved))
        np.testing.assert_allclose(permuted(x), model(x), rtol=1e-4, atol=1e-5)

    class Boxed(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = jax.nn.relu(nn.Conv(4, (3, 3))(x)).mean((1, 2))
            return nn.Dense(2, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                                        ("a", "b")))(x)

    variables = Boxed().init(jax.random.key(0), jnp.ones((1, 5, 5, 1)))
    assert isinstance(variables["params"]["Dense_0"]["kernel"], nn.LogicallyPartitioned)
    assert spec_lib.cnn(variables).leaf_axes == spec_lib.cnn(nn.meta.unbox(variables)).leaf_axes


def test_a_named_attention_bias_is_no_matrix_for_the_learned_rules():
    from unf.lopt import width

    named = lambda init, *names: nnx.with_partitioning(init, names, eager_sharding=False)  # noqa: E731
    attention = nnx.MultiHeadAttention(
        num_heads=2, in_features=8, decode=False, rngs=nnx.Rngs(0),
        kernel_init=named(nnx.initializers.lecun_normal(), "embed", "heads", "kv"),
        out_kernel_init=named(nnx.initializers.lecun_normal(), "heads", "kv", "embed"),
        bias_init=named(nnx.initializers.zeros_init(), "heads", "kv"),
        out_bias_init=named(nnx.initializers.zeros_init(), "embed"))
    spec = spec_lib.from_flax(attention)
    roles = {n: width.ROLES[r] for n, (r, _) in zip(spec.leaf_names, width.roles(spec, [False] * spec.num_leaves))}
    views = dict(zip(spec.leaf_names, width.matrix_views(spec, [False] * spec.num_leaves)))
    # Flax adds a bias, never contracts it: [heads, kv] is two width axes but no matrix to orthogonalise.
    assert roles["['query']['bias']"] == "vector" and views["['query']['bias']"] is None
    assert roles["['query']['kernel']"] == "hidden" and views["['out']['kernel']"] == ((0, 1), (2,))
    assert roles["['out']['bias']"] == "vector"
