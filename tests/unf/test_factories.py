"""The one-call optax factories: exactly Adam when fresh, trained meta-params need a run length, ``import unf``
alone reaches them."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import optax
import pytest

from unf import lopt, tasks


@pytest.fixture(scope="module")
def task():
    return tasks.transformer_lm(d_model=8, layers=2, heads=2, seq=6, batch=2)


def updates_after(tx, params, n=3):
    state = tx.init(params)
    for i in range(n):
        grads = jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.key(i), p.shape), params)
        updates, state = tx.update(grads, state, params)
    return updates


@pytest.mark.parametrize("lr", [None, 3e-3])
def test_fresh_factories_are_exactly_adam(task, lr):
    params = task.init(jax.random.key(0))
    reference = updates_after(optax.adam(lr or 1e-3), params)
    for tx in (lopt.equivariant_adam(task.spec, learning_rate=lr, layer_key="blocks"),
               lopt.per_parameter_adam(learning_rate=lr, layer_key="blocks")):
        ours = updates_after(tx, params)
        scale = max(float(jnp.max(jnp.abs(r))) for r in jax.tree.leaves(reference))
        worst = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)))
        assert worst <= 1e-5 * scale


def test_trained_meta_params_need_total_steps(task):
    learned = lopt.EquivariantAdam(task.spec, layer_key="blocks")
    meta = learned.init_meta_params(jax.random.key(0))
    with pytest.raises(ValueError, match="total_steps is required"):
        lopt.equivariant_adam(task.spec, meta, layer_key="blocks")
    assert isinstance(lopt.equivariant_adam(task.spec, meta, total_steps=10, layer_key="blocks"),
                      optax.GradientTransformationExtraArgs)


def test_bad_arguments_are_named(task):
    with pytest.raises(TypeError, match="spec must be a WeightSpaceSpec"):
        lopt.equivariant_adam({"w": ("a", "b")})
    with pytest.raises(TypeError, match="spec must be a WeightSpaceSpec or None"):
        lopt.PerParameterAdam(8)
    with pytest.raises(ValueError, match="hidden must be a positive int"):
        lopt.equivariant_adam(task.spec, hidden=0)
    with pytest.raises(ValueError, match="total_steps must be a positive int"):
        lopt.equivariant_adam(task.spec, learning_rate=1e-3, total_steps=0)
    with pytest.raises(TypeError, match=r"got a WeightSpaceSpec.*per_parameter_adam\(spec=spec\)"):
        lopt.per_parameter_adam(task.spec)


def test_import_unf_reaches_lopt():
    code = "import unf; print(unf.lopt.equivariant_adam.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "equivariant_adam"


@pytest.mark.parametrize("factory", ["equivariant_adam", "per_parameter_adam", "pretrained"])
def test_an_optimizer_made_inside_one_jit_runs_in_another(factory):
    # nnx.Optimizer made in a jitted create function, as a sharded Flax model is: what the transformation holds
    # must be constants there, not values traced there.
    from flax import nnx

    from unf import spec as spec_lib

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden, self.out = nnx.Linear(4, 16, rngs=rngs), nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.hidden(x)))

    spec = spec_lib.mlp(MLP(nnx.Rngs(0)))
    make = {"equivariant_adam": lambda: lopt.equivariant_adam(spec),
            "per_parameter_adam": lambda: lopt.per_parameter_adam(),
            "pretrained": lambda: lopt.pretrained("transformer-lm", total_steps=10, spec=spec)}[factory]

    @nnx.jit
    def create():
        model = MLP(nnx.Rngs(0))
        return model, nnx.Optimizer(model, make(), wrt=nnx.Param)

    model, optimizer = create()
    x, y = jax.random.normal(jax.random.key(1), (8, 4)), jnp.arange(8) % 3

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(
            lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean())(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(3)]
    assert losses[-1] < losses[0]
