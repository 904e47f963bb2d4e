"""The learned optimizers inside Flax's own training loops: ``nnx.Optimizer`` (params arrive as ``nnx.State``, at
``init`` still boxed in ``nnx.Param``) and a linen ``TrainState``. Fresh, every one equals ``optax.adam(1e-3)``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from flax.training import train_state

from unf import lopt, spec as spec_lib


def kernel(*names):
    return nnx.with_partitioning(nnx.initializers.normal(0.3), names, eager_sharding=False)


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(5, 7, kernel_init=kernel(None, "hidden_1"), bias_init=kernel("hidden_1"), rngs=rngs)
        self.l2 = nnx.Linear(7, 3, kernel_init=kernel("hidden_1", None), use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def loss(model, x):
    return jnp.mean(jnp.square(model(x)))


def optimizers(spec):
    return {
        "equivariant": lopt.equivariant_adam(spec),
        "per-parameter": lopt.per_parameter_adam(),
        "per-parameter with spec": lopt.per_parameter_adam(spec=spec),
    }


def assert_adam_like(ours, theirs, before):
    for a, b, p in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), jax.tree.leaves(before)):
        step = np.max(np.abs(np.asarray(b) - np.asarray(p)))
        assert np.max(np.abs(np.asarray(a) - np.asarray(b))) <= 1e-5 * step


def nnx_params_after(tx, steps=3):
    model = MLP(nnx.Rngs(0))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), (4, 5))
    for _ in range(steps):
        grads = nnx.grad(loss)(model, x)
        opt.update(model, grads)
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_every_optimizer_is_adam_in_nnx_optimizer():
    spec = spec_lib.from_flax(MLP(nnx.Rngs(0)), rules={"hidden_1": "shared"})
    before = nnx.to_pure_dict(nnx.state(MLP(nnx.Rngs(0)), nnx.Param))
    reference = nnx_params_after(optax.adam(1e-3))
    for name, tx in optimizers(spec).items():
        assert_adam_like(nnx_params_after(tx), reference, before)


def test_every_optimizer_is_adam_in_a_linen_train_state():
    class Linen(nn.Module):
        @nn.compact
        def __call__(self, x):
            named = lambda *n: nn.with_logical_partitioning(nn.initializers.normal(0.3), n)  # noqa: E731
            x = nn.Dense(6, kernel_init=named("embed", "mlp"), bias_init=named("mlp"))(x)
            return nn.Dense(3, kernel_init=named("mlp", "embed"), use_bias=False)(jax.nn.relu(x))

    model, x = Linen(), jax.random.normal(jax.random.key(0), (4, 3))
    variables = model.init(jax.random.key(1), jnp.ones((1, 3)))
    spec = spec_lib.from_flax(variables["params"], rules={**spec_lib.FLAX_RULES, "embed": "unpermuted"})
    params = nn.unbox(variables["params"])

    def trained(tx):
        state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        for _ in range(3):
            grads = jax.grad(lambda p: jnp.mean(jnp.square(model.apply({"params": p}, x))))(state.params)
            state = state.apply_gradients(grads=grads)
        return state.params

    reference = trained(optax.adam(1e-3))
    for name, tx in optimizers(spec).items():
        assert_adam_like(trained(tx), reference, params)


def test_a_model_outside_the_spec_is_refused_at_init():
    spec = spec_lib.from_flax(MLP(nnx.Rngs(0)), rules={"hidden_1": "shared"})

    class Other(nnx.Module):
        def __init__(self, rngs):
            self.w = nnx.Linear(2, 2, rngs=rngs)

    with pytest.raises(ValueError, match=r"missing .*extra"):
        nnx.Optimizer(Other(nnx.Rngs(0)), lopt.equivariant_adam(spec), wrt=nnx.Param)


def test_the_shipped_rule_in_nnx_optimizer_takes_the_spec_of_the_model_itself():
    class Plain(nnx.Module):
        def __init__(self, rngs):
            self.l1, self.l2 = nnx.Linear(5, 7, rngs=rngs), nnx.Linear(7, 3, rngs=rngs)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.l1(x)))

    x = jax.random.normal(jax.random.key(1), (4, 5))
    model = Plain(nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    tx = optax.with_extra_args_support(lopt.pretrained("transformer-lm", total_steps=3, spec=spec_lib.mlp(model)))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    state = tx.init(params)
    for _ in range(3):
        opt.update(model, nnx.grad(loss)(model, x))

        def pure_loss(p):
            twin = Plain(nnx.Rngs(0))
            nnx.update(twin, nnx.State(p))
            return loss(twin, x)

        updates, state = tx.update(jax.grad(pure_loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    for a, b in zip(jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param))), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    fresh = nnx.to_pure_dict(nnx.state(Plain(nnx.Rngs(0)), nnx.Param))
    assert not np.allclose(params["l1"]["kernel"], fresh["l1"]["kernel"])
