"""unf.tasks.nnx_task: a user's nnx model as a meta-training task, its spec read off its loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from unf import lopt, tasks
from unf import spec as spec_lib
from unf.meta import ESConfig, MetaTrainConfig, meta_train


class Classifier(nnx.Module):
    def __init__(self, rngs, width=8):
        self.hidden = nnx.Linear(4, width, rngs=rngs)
        self.norm = nnx.BatchNorm(width, rngs=rngs)
        self.out = nnx.Linear(width, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.norm(self.hidden(x))))


def loss(model, batch):
    return optax.softmax_cross_entropy_with_integer_labels(model(batch["x"]), batch["y"]).mean()


def sample(key):
    x = jax.random.normal(key, (16, 4))
    return {"x": x, "y": (x[:, 0] > 0).astype(jnp.int32) + (x[:, 1] > 0)}


@pytest.fixture(scope="module")
def task():
    return tasks.nnx_task("classifier", Classifier, loss, sample, config=(("width", 8),))


def test_the_task_is_the_models_loss_over_the_params_nnx_optimizer_holds(task):
    model = Classifier(nnx.Rngs(5))
    params = task.init(jax.random.key(5))
    assert jax.tree.structure(params) == jax.tree.structure(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    batch = sample(jax.random.key(1))
    np.testing.assert_allclose(task.loss(params, batch), loss(model, batch), rtol=1e-6)
    assert task.label == "classifier(width=8)"
    # The hidden units are one group, through the BatchNorm; the spec says so and it is a symmetry of the loss.
    axes = task.spec.axes_tree()
    assert axes["hidden"]["kernel"][1] == axes["norm"]["scale"][0] == axes["out"]["kernel"][0] is not None
    assert max(spec_lib.check_symmetry(task.loss, params, task.spec, batch, key=jax.random.key(2)).values()) < 1e-4


def test_a_rule_without_a_correction_meta_trains_on_it(task, tmp_path):
    learned = lopt.EquivariantAdam(tasks.transformer_lm(d_model=8, heads=2, seq=8, batch=2).spec, layer_key="blocks",
                                   base="orthogonal", correction=False)
    cfg = MetaTrainConfig(steps=2, checkpoint_every=2, seed=0,
                          es=ESConfig(num_particles=2, truncation=2, horizons=(4,)))
    state = meta_train(learned, [task], cfg, tmp_path, progress=False)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.meta_params))
    assert (tmp_path / "metrics.jsonl").read_text().count("classifier(width=8)") == 2


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="make_model must return an nnx.Module, got dict"):
        tasks.nnx_task("t", lambda rngs: {}, loss, sample)
    with pytest.raises(TypeError, match="loss, sample_batch must be callable"):
        tasks.nnx_task("t", Classifier, None, 3)

    class Dropping(nnx.Module):
        def __init__(self, rngs, deterministic=False):
            self.inner = Classifier(rngs)
            self.drop = nnx.Dropout(0.2, deterministic=deterministic, rngs=rngs)

        def __call__(self, x):
            return self.drop(self.inner(x))

    with pytest.raises(ValueError, match=r"dropout that is on \(\['drop'\]\).*deterministic=True"):
        tasks.nnx_task("t", Dropping, loss, sample)
    tasks.nnx_task("t", lambda rngs: Dropping(rngs, deterministic=True), loss, sample)  # off: a fixed function
