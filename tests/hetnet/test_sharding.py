"""The sharded train step (data and tensor parallel, from the axes' labels) equals the single-device step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from hetnet import sharding, train
from hetnet.axes import Nested
from hetnet.config import TransformerConfig
from hetnet.models import TransformerLM

CFG = TransformerConfig(vocab_size=16, d_model=8, num_heads=4, num_kv_heads=2, d_ff=16, num_layers=2, max_len=8)


@pytest.fixture(scope="module")
def setup():
    if jax.device_count() < 4:
        pytest.fail("the sharding tests need 4 devices; tests/conftest.py sets jax_num_cpu_devices=4")
    model = TransformerLM(CFG)
    params, axes = model.init(jax.random.key(0)), model.axes
    tokens = jax.random.randint(jax.random.key(1), (8, CFG.max_len + 1), 0, CFG.vocab_size)
    return params, axes, {"tokens": tokens}


def test_rules_shard_heads_and_mlp_over_model_axis(setup):
    params, axes, _ = setup
    mesh = jax.make_mesh((2, 2), ("data", "model"))
    shardings = sharding.named_shardings(params, axes, mesh)
    block = shardings["blocks"]  # the stacked layers axis stays unsharded
    assert block["attn"]["query"].spec == PartitionSpec(None, None, "model", None, None)
    assert block["ffn"]["w_out"].spec == PartitionSpec(None, "model", None)
    assert shardings["tokens"].spec == PartitionSpec(None, None)


def test_indivisible_axis_falls_back_to_replication():
    mesh = jax.make_mesh((1, 4), ("data", "model"))
    spec = sharding.partition_spec(("embed", Nested("blocks/kv_heads"), Nested("blocks/q_per_kv")), (8, 2, 2), mesh,
                                   sharding.TENSOR_PARALLEL_RULES)
    assert spec == PartitionSpec(None, None, None)


def test_rule_naming_a_missing_mesh_axis():
    mesh = jax.make_mesh((4,), ("data",))
    with pytest.raises(ValueError, match="mesh axis 'model', which the mesh lacks"):
        sharding.partition_spec(("heads",), (4,), mesh, sharding.TENSOR_PARALLEL_RULES)


# Pure data parallelism, pure tensor parallelism, and the mixed mesh that shards the batch over "data" too.
@pytest.mark.parametrize("mesh_shape", [(4, 1), (2, 2), (1, 4)],
                         ids=["data", "data+model", "model"])
def test_sharded_step_matches_single_device(setup, mesh_shape):
    params, axes, batch = setup
    optimizer = optax.adam(1e-2)
    loss_fn = TransformerLM(CFG).loss
    single = train.make_train_step(loss_fn, optimizer)
    fresh = lambda t: jax.tree.map(jnp.copy, t)  # noqa: E731 - the step donates its inputs
    want_params, _, want_metrics = single(fresh(params), optimizer.init(params), batch)

    mesh = jax.make_mesh(mesh_shape, ("data", "model"))
    shardings = train.step_shardings(optimizer, params, axes, mesh)
    sharded = train.make_train_step(loss_fn, optimizer, shardings)
    p = train.place(fresh(params), shardings.params)
    s = train.place(optimizer.init(params), shardings.opt_state)
    b = train.place(batch, shardings.batch)
    got_params, got_state, got_metrics = sharded(p, s, b)
    # Two steps, so the sharded optimizer state is exercised too.
    got_params, _, got_metrics2 = sharded(got_params, got_state, b)
    want_params2, _, want_metrics2 = single(fresh(want_params), optimizer.update(
        jax.grad(loss_fn)(params, batch), optimizer.init(params), params)[1], batch)

    np.testing.assert_allclose(got_metrics["loss"], want_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(got_metrics2["loss"], want_metrics2["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got_params, want_params2)
    assert got_params["blocks"]["ffn"]["w_in"].sharding.spec == shardings.params["blocks"]["ffn"]["w_in"].spec
