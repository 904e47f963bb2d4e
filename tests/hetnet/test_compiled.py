import jax
import jax.numpy as jnp
import numpy as np

from hetnet import TransformerConfig, TransformerLM
from hetnet.compiled import run_once

CFG = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=2, max_len=8)


def test_a_compiled_init_draws_what_the_init_traced_in_a_callers_program_draws():
    model = TransformerLM(CFG)
    key = jax.random.key(3)
    compiled = model.init(key)
    inline = jax.jit(model.init)(key)  # a traced key: the init runs inside the caller's program
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), compiled, inline)
    per_seed = jax.vmap(model.init)(jax.random.split(key, 2))
    assert jax.tree.leaves(per_seed)[0].shape[0] == 2
    shapes = jax.eval_shape(model.init, key)
    assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, compiled)


def test_run_once_computes_the_function_and_inlines_under_a_trace():
    fn = lambda x, tree: x * 2 + tree["b"]  # noqa: E731
    x, tree = jnp.arange(3.0), {"b": jnp.ones(3)}
    np.testing.assert_array_equal(run_once(fn, x, tree), fn(x, tree))
    np.testing.assert_array_equal(jax.jit(lambda a: run_once(fn, a, tree))(x), fn(x, tree))
