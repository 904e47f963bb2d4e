"""One role's steps scaled alone: ``unf.lopt.role_mask`` under ``optax.masked``, in any params layout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hetnet import TransformerConfig, TransformerLM
from unf import lopt, spec as spec_lib
from unf.lopt import width


def _mlp(sizes=(6, 16, 16, 3)):
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    return [{"w": jax.random.normal(k, (a, b)) / a**0.5, "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def test_the_roles_partition_the_leaves_of_an_mlp():
    params = _mlp()
    spec = spec_lib.mlp(params)
    masks = {role: lopt.role_mask(spec, role)(params) for role in width.ROLES}
    assert masks["input"] == [{"w": True, "b": False}, {"w": False, "b": False}, {"w": False, "b": False}]
    assert masks["hidden"] == [{"w": False, "b": False}, {"w": True, "b": False}, {"w": False, "b": False}]
    assert masks["output"] == [{"w": False, "b": False}, {"w": False, "b": False}, {"w": True, "b": False}]
    assert masks["vector"] == [{"w": False, "b": True}, {"w": False, "b": True}, {"w": False, "b": True}]


def test_the_stacked_layers_of_a_transformer_take_their_roles_per_layer():
    model = TransformerLM(TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=3, max_len=4))
    params = model.init(jax.random.key(0))
    spec = spec_lib.from_hetnet(params, model.axes)
    hidden = lopt.role_mask(spec, "hidden")(params)
    expected = width.roles(spec, width.stacked_by_labels(spec))
    for name, flag, (role, _) in zip(spec.leaf_names, jax.tree.leaves(hidden), expected):
        assert flag == (role == width.ROLES.index("hidden")), name
    # The stacked blocks' projections are hidden, the token and position tables input, the unembedding output.
    assert all(jax.tree.leaves({k: hidden["blocks"][k] for k in ("attn", "ffn")}))
    assert lopt.role_mask(spec, "input")(params)["tokens"] and lopt.role_mask(spec, "output")(params)["unembed"]


def test_masked_scale_multiplies_that_role_s_updates_only():
    params = _mlp()
    spec = spec_lib.mlp(params)
    base = lopt.pretrained("transformer-lm", total_steps=20, spec=spec)
    scaled = optax.chain(base, optax.masked(optax.scale(10.0), lopt.role_mask(spec, "output")))
    grads = jax.tree.map(lambda x: jnp.cos(jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)), params)
    plain, _ = base.update(grads, base.init(params), params)
    tenfold, _ = scaled.update(grads, scaled.init(params), params)
    for k, (a, b) in enumerate(zip(plain, tenfold)):
        np.testing.assert_allclose(b["w"], a["w"] * (10.0 if k == 2 else 1.0), rtol=1e-6)
        np.testing.assert_allclose(b["b"], a["b"], rtol=1e-6)
    assert float(jnp.max(jnp.abs(plain[2]["w"]))) > 0


class _Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.first = nnx.Linear(6, 16, rngs=rngs)
        self.middle = nnx.Linear(16, 16, rngs=rngs)
        self.readout = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.readout(nnx.relu(self.middle(nnx.relu(self.first(x)))))


def test_it_masks_the_nnx_state_nnx_optimizer_passes():
    x = jnp.linspace(-1.0, 1.0, 24).reshape(4, 6)
    spec = spec_lib.infer(_Net(nnx.Rngs(0)), x)

    def step(k):
        model = _Net(nnx.Rngs(0))
        before = nnx.state(model, nnx.Param)
        before = jax.tree.map(jnp.copy, before)
        tx = optax.chain(lopt.pretrained("transformer-lm", total_steps=10, spec=spec),
                         optax.masked(optax.scale(k), lopt.role_mask(spec, "output")))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        optimizer.update(model, nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model))
        return jax.tree.map(lambda a, b: a - b, nnx.state(model, nnx.Param), before)

    one, three = step(1.0), step(3.0)
    # The changes are differences of params of order one, so they carry float32 rounding of the params' size.
    np.testing.assert_allclose(three["readout"]["kernel"][...], 3.0 * one["readout"]["kernel"][...], atol=2e-7)
    np.testing.assert_allclose(three["middle"]["kernel"][...], one["middle"]["kernel"][...], atol=2e-7)
    np.testing.assert_allclose(three["readout"]["bias"][...], one["readout"]["bias"][...], atol=2e-7)


def test_bad_roles_specs_and_trees_are_refused_by_name():
    params = _mlp()
    spec = spec_lib.mlp(params)
    with pytest.raises(ValueError, match=r"role must be one of \('vector', 'input', 'output', 'hidden'\), got 'readout'"):
        lopt.role_mask(spec, "readout")
    with pytest.raises(TypeError, match="spec must be a unf.spec.WeightSpaceSpec.*got list"):
        lopt.role_mask(params, "output")
    with pytest.raises(ValueError, match="role_mask: the tree's leaves .* are not the spec's"):
        lopt.role_mask(spec, "output")(_mlp((6, 16, 3)))


def test_a_spec_of_boxed_linen_params_masks_them_boxed_and_unboxed():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            init = nn.initializers.lecun_normal()
            x = nn.relu(nn.Dense(16, kernel_init=nn.with_logical_partitioning(init, ("features", "hidden")))(x))
            return nn.Dense(3, kernel_init=nn.with_logical_partitioning(init, ("hidden", "classes")))(x)

    net, x = Net(), jnp.ones((2, 5))
    boxed = net.init(jax.random.key(0), x)["params"]
    spec = spec_lib.infer(lambda p, x: net.apply({"params": p}, x), boxed, x)
    mask = lopt.role_mask(spec, "output")
    assert nn.unbox(mask(boxed)) == mask(nn.unbox(boxed)) == {"Dense_0": {"bias": False, "kernel": False},
                                                               "Dense_1": {"bias": False, "kernel": True}}
