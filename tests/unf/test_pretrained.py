"""The optimizer that ships with the package: loads, says how it was made, trains models it never saw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unf import lopt, tasks
from unf.lopt import shipped
from unf.meta import export

from tests.unf import optax_loop


def test_the_transformer_optimizer_ships_with_its_provenance():
    assert "transformer-lm" in lopt.available()
    info = shipped.info("transformer-lm")
    assert info["command"].startswith("unf-meta-train --recipe transformer-lm")
    assert {"meta_steps", "device", "date", "commit", "es", "recipe", "kind"} <= set(info)
    from unf import recipes

    recipe = recipes.recipe(info["recipe"])
    assert info["meta_steps"] == recipe.config.steps  # the recipe's own budget: its command reproduces the weights
    assert info["kind"] in recipes.KINDS and recipe.start(info["kind"]) is not None


def test_it_trains_a_transformer_of_another_width_depth_and_attention():
    task = tasks.transformer_lm(d_model=24, layers=2, heads=4, seq=8, batch=8, attention="linear")
    _, _, losses = optax_loop.train(task, lopt.pretrained("transformer-lm", total_steps=30), 30, seed=0)
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3


def test_unknown_names_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="name must be one of the shipped optimizers"):
        lopt.pretrained("transformer", total_steps=10)
    for bad in (0, -5, 2.5, True, "100"):
        with pytest.raises(ValueError, match=f"total_steps must be a positive int .*got {bad!r}"):
            lopt.pretrained("transformer-lm", total_steps=bad)
    lopt.pretrained("transformer-lm", total_steps=np.int64(100))  # a NumPy count is a count
    learned, meta = lopt.load_pretrained("transformer-lm")
    other = lopt.PerParameterAdam().init_meta_params(jax.random.key(0))
    export.save_npz(tmp_path / "other.npz", other)
    with pytest.raises(ValueError, match="does not hold meta-params of this optimizer"):
        export.load_npz(tmp_path / "other.npz", meta)
    export.save_npz(tmp_path / "same.npz", meta)
    again = export.load_npz(tmp_path / "same.npz", jax.eval_shape(learned.init_meta_params, jax.random.key(0)))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), again, meta)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(again))


def test_an_export_folder_rebuilds_the_rule_it_was_trained_as(tmp_path):
    from unf import recipes

    learned = recipes.recipe("transformer-lm").learned("unf-muon", correction=False)
    meta = learned.init_meta_params(jax.random.key(0))
    info = {"recipe": "transformer-lm", "kind": "unf-muon", "correction": False, "meta_steps": 0}
    export.save_meta_params(tmp_path / "run", meta, info)
    again, params, read = recipes.load_export(tmp_path / "run")
    assert again == learned and not again.correction and read == info
    jax.tree.map(np.testing.assert_array_equal, params, meta)
    with pytest.raises(FileNotFoundError, match="meta_params.npz and info.json missing"):
        recipes.load_export(tmp_path / "nothing")
    export.save_meta_params(tmp_path / "family", meta, {"task": "mlp"})
    with pytest.raises(ValueError, match="unf-eval --task"):
        recipes.load_export(tmp_path / "family")
    with pytest.raises(ValueError, match="correction must be True, or False for the kinds"):
        recipes.recipe("transformer-lm").learned("mlp-adam", correction=False)


def test_given_its_models_own_spec_the_rule_is_exactly_the_shipped_one():
    """The shipped rule reads labels only: served through a hetnet model's own spec (stacked layers read off the
    ``layers`` label) it makes the very updates it makes in its own layout."""
    task = tasks.transformer_lm(d_model=24, layers=2, heads=4, seq=8, batch=4, ffn="swiglu")
    params = task.init(jax.random.key(0))
    grads = [jax.grad(task.loss)(params, task.sample_batch(jax.random.key(i))) for i in range(2)]
    own = optax_loop.apply_updates_of(lopt.pretrained("transformer-lm", total_steps=50), params, grads)
    by_spec = optax_loop.apply_updates_of(lopt.pretrained("transformer-lm", total_steps=50, spec=task.spec), params,
                                          grads)
    jax.tree.map(np.testing.assert_array_equal, by_spec, own)


def test_given_a_spec_it_trains_networks_that_are_not_transformers():
    from unf import spec as spec_lib

    task = tasks.mlp_digits(width=16, depth=2, batch=32)
    spec = spec_lib.mlp(jax.eval_shape(task.init, jax.random.key(0)))
    _, _, losses = optax_loop.train(task, lopt.pretrained("transformer-lm", total_steps=40, spec=spec), 40, seed=0)
    assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_a_chained_scale_is_the_learned_schedule_times_that_scale():
    """The guide's way to tune the shipped rule on another network: every part of its update, decoupled decay
    included, is proportional to the step size, so ``optax.chain(opt, optax.scale(k))`` is the learned schedule
    times ``k``."""
    import optax

    from unf import spec as spec_lib
    from unf.lopt import schedule

    task = tasks.mlp_digits(width=16, depth=2, batch=8)
    params = jax.tree.map(lambda x: x + 0.3, task.init(jax.random.key(0)))  # non-zero biases: decay acts on all
    spec = spec_lib.mlp(params)
    grads = [jax.grad(task.loss)(params, task.sample_batch(jax.random.key(i))) for i in range(3)]
    _, meta = lopt.load_pretrained("transformer-lm")
    assert float(meta["weight_decay"]) > 0.0  # otherwise the decay's share is not tested
    k, steps = 7.0, 20
    chained = optax.chain(lopt.pretrained("transformer-lm", total_steps=steps, spec=spec), optax.scale(k))
    own = lopt.pretrained("transformer-lm", total_steps=steps, spec=spec,
                          learning_rate=lambda t: k * schedule.learning_rate(meta["schedule"], t, steps))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 optax_loop.apply_updates_of(optax.with_extra_args_support(chained), params, grads),
                 optax_loop.apply_updates_of(own, params, grads))


def test_params_that_are_not_real_floating_point_are_refused_by_leaf_at_init():
    from unf import spec as spec_lib

    params = tasks.mlp_digits(width=8, depth=1, batch=4).init(jax.random.key(0))
    opt = lopt.pretrained("transformer-lm", total_steps=10, spec=spec_lib.mlp(params))
    opt.init(params)  # float32 is served
    for dtype in (jnp.int32, jnp.complex64):
        bad = [dict(layer) for layer in params]
        bad[1]["b"] = bad[1]["b"].astype(dtype)
        with pytest.raises(TypeError, match=rf"\[1\]\['b'\] has dtype {jnp.dtype(dtype).name}.*floating-point"):
            opt.init(bad)
    model_params = tasks.transformer_lm(d_model=8, heads=2, layers=1, seq=8, batch=2).init(jax.random.key(0))
    as_int = jax.tree.map(lambda p: p.astype(jnp.int32), model_params)
    with pytest.raises(TypeError, match="has dtype int32"):
        lopt.pretrained("transformer-lm", total_steps=10).init(as_int)


def test_a_bad_spec_is_refused_by_name():
    from unf import spec as spec_lib

    with pytest.raises(TypeError, match="spec must be a unf.spec.WeightSpaceSpec.*got dict"):
        lopt.pretrained("transformer-lm", total_steps=10, spec={"w": ("embed",)})
    task = tasks.mlp_digits(width=8, depth=1, batch=4)
    params = task.init(jax.random.key(0))
    spec = spec_lib.mlp(params)
    with pytest.raises(ValueError, match="pass model or spec, not both"):
        lopt.pretrained("transformer-lm", total_steps=10, spec=spec, model=params)
    other = tasks.mlp_digits(width=8, depth=2, batch=4).init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"\[2\]"):  # the leaf the spec lacks
        lopt.pretrained("transformer-lm", total_steps=10, spec=spec).init(other)
    from unf.lopt import learned_adam

    _, meta = lopt.load_pretrained("transformer-lm")
    with pytest.raises(ValueError, match="stacked_by_labels.*needs a spec and no layer_key"):
        learned_adam.transformation(meta, None, 10, layer_key="blocks", spec=spec, stacked_by_labels=True)


@pytest.mark.parametrize("block", ["recurrent", "hyperset"])
def test_a_hetnet_model_of_another_body_is_pointed_to_its_labels_and_trained_through_them(block):
    from hetnet import TransformerConfig, TransformerLM
    from unf import spec as spec_lib

    model = TransformerLM(TransformerConfig(vocab_size=32, d_model=16, num_heads=2, num_layers=2, max_len=8,
                                            block=block))
    params = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=f"block='{block}'.*spec=unf.spec.from_hetnet\\(params, model.axes\\)"):
        lopt.pretrained("transformer-lm", total_steps=20).init(params)
    opt = lopt.pretrained("transformer-lm", total_steps=20, spec=spec_lib.from_hetnet(params, model.axes))
    batch = {"tokens": jax.random.randint(jax.random.key(1), (4, 8), 0, 32)}
    _, _, losses = optax_loop.train_params(model.loss, params, opt, 20, lambda key: batch)
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.5


def test_the_shipped_optimizer_runs_in_hetnets_donating_step_sharded_as_on_one_device():
    import optax

    from hetnet import TransformerConfig, TransformerLM, train

    model = TransformerLM(TransformerConfig(vocab_size=16, d_model=8, num_heads=4, num_kv_heads=2, num_layers=2,
                                            max_len=8))
    params = model.init(jax.random.key(0))
    batch = {"tokens": jax.random.randint(jax.random.key(1), (8, 9), 0, 16)}
    opt = lopt.pretrained("transformer-lm", total_steps=10)
    fresh = lambda t: jax.tree.map(jnp.copy, t)  # noqa: E731 - the steps donate their inputs

    # The state's moments are buffers of their own, so a step that donates the state takes it.
    single = train.make_train_step(model.loss, opt)
    want, want_state, _ = single(fresh(params), opt.init(params), batch)
    want, _, want_metrics = single(want, want_state, batch)

    # optax.tree_map_params reads which state leaves are copies of the params, to shard them alike.
    mesh = jax.make_mesh((2, 2), ("data", "model"))
    shardings = train.step_shardings(opt, params, model.axes, mesh)
    placeholders = optax.tree_map_params(opt, lambda _: "param", jax.eval_shape(opt.init, params),
                                         transform_non_params=lambda _: "other")
    assert set(jax.tree.leaves(placeholders.momenta + (placeholders.second_moment,))) == {"param"}
    assert placeholders.count == "other"
    sharded = train.make_train_step(model.loss, opt, shardings)
    got, got_state, _ = sharded(train.place(fresh(params), shardings.params),
                                train.place(opt.init(params), shardings.opt_state), train.place(batch, shardings.batch))
    got, got_state, got_metrics = sharded(got, got_state, train.place(batch, shardings.batch))
    assert got_state.second_moment["blocks"]["ffn"]["w_in"].sharding.spec == \
        shardings.params["blocks"]["ffn"]["w_in"].spec
    np.testing.assert_allclose(got_metrics["loss"], want_metrics["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), got, want)
