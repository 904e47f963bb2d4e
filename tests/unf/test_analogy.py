"""A rule that reads labels only serves leaves its spec never saw by a sibling's labels: a SwiGLU gate steps exactly as
an input matrix would, a LayerNorm offset as a norm scale would, the labels are the model's own, the update keeps the
model's symmetry, and a leaf with no labels and no sibling is refused by name."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hetnet import TransformerConfig, TransformerLM
from unf import lopt, spec as spec_lib

from tests.unf import optax_loop

VARIANTS = {"swiglu": dict(ffn="swiglu"), "layernorm": dict(norm="layer")}
# The sibling each new leaf is labelled as, in each variant.
NEW_LEAVES = {"swiglu": [(("blocks", "ffn", "w_gate"), ("blocks", "ffn", "w_in"))],
              "layernorm": [(("blocks", "attn_norm", "bias"), ("blocks", "attn_norm", "scale")),
                            (("final_norm", "bias"), ("final_norm", "scale"))]}


@pytest.fixture(scope="module")
def shipped():
    return lopt.load_pretrained("transformer-lm")


def model(variant: str, d_model: int = 48, layers: int = 3) -> TransformerLM:
    return TransformerLM(TransformerConfig(vocab_size=40, d_model=d_model, num_heads=4, num_kv_heads=2,
                                           num_layers=layers, max_len=12, **VARIANTS[variant]))


def get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def put(tree, path, value):
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: put(tree[path[0]], path[1:], value)}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_labels_by_analogy_are_the_models_own(shipped, variant):
    learned, _ = shipped
    m = model(variant)
    params = jax.eval_shape(m.init, jax.random.key(0))
    got = spec_lib.extend_by_analogy(learned.spec, params, spec_lib.HETNET_ANALOGUES)
    # The shipped spec permutes vocab and positions as groups of their own; compare on the same footing.
    own = spec_lib.from_hetnet(params, m.axes, io_as_groups=True)
    assert got.leaf_names == own.leaf_names and got.leaf_axes == own.leaf_axes


def test_a_leaf_with_no_labels_and_no_sibling_is_refused_by_name(shipped):
    learned, meta = shipped
    params = model("swiglu").init(jax.random.key(0))
    params["blocks"]["ffn"]["w_extra"] = params["blocks"]["ffn"]["w_in"]
    with pytest.raises(ValueError, match=r"\['blocks'\]\['ffn'\]\['w_extra'\].*no sibling"):
        learned.opt_fn(meta, total_steps=10).init(params)
    with pytest.raises(TypeError, match="analogues must map leaf names to sibling names"):
        spec_lib.extend_by_analogy(learned.spec, params, None)
    with pytest.raises(TypeError, match="reference must be a WeightSpaceSpec, got dict"):
        spec_lib.extend_by_analogy({}, params, spec_lib.HETNET_ANALOGUES)
    with_correction = lopt.EquivariantAdam(learned.spec, layer_key="blocks")
    with pytest.raises(ValueError, match=r"extra \[\"\['blocks'\]\['ffn'\]\['w_gate'\]\"\].*correction=False"):
        with_correction.check_params(model("swiglu").init(jax.random.key(0)))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_new_leaf_steps_exactly_as_its_sibling_would(shipped, variant):
    learned, meta = shipped
    params = model(variant).init(jax.random.key(0))
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(p.size), p.shape), params)
    opt = lopt.pretrained("transformer-lm", total_steps=100)
    updates, _ = opt.update(grads, opt.init(params), params)
    for new, sibling in NEW_LEAVES[variant]:
        # Give the sibling the new leaf's weights and gradient: its update must be the new leaf's.
        swapped_p = put(params, sibling, get(params, new))
        swapped_g = put(grads, sibling, get(grads, new))
        again, _ = opt.update(swapped_g, opt.init(swapped_p), swapped_p)
        np.testing.assert_allclose(get(updates, new), get(again, sibling), rtol=1e-5, atol=1e-9)
        assert float(jnp.max(jnp.abs(get(updates, new)))) > 0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_update_commutes_with_the_models_permutations(shipped, variant):
    m = model(variant, d_model=32, layers=2)
    params = m.init(jax.random.key(1))
    spec = spec_lib.from_hetnet(params, m.axes)
    opt = lopt.pretrained("transformer-lm", total_steps=20)
    grads = [jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.key(30 + i), p.shape), params) for i in range(2)]

    run = jax.jit(functools.partial(optax_loop.apply_updates_of, opt))
    perms = spec.sample(jax.random.key(7))
    got = run(spec.apply(perms, params), [spec.apply(perms, g) for g in grads])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=5e-4, atol=1e-6), got,
                 spec.apply(perms, run(params, grads)))


def test_the_shipped_optimizer_trains_a_swiglu_layernorm_rotary_model():
    m = TransformerLM(TransformerConfig(vocab_size=40, d_model=24, num_heads=4, num_layers=2, max_len=12,
                                        ffn="swiglu", norm="layer", positions="rope"))
    params = m.init(jax.random.key(0))
    assert "positions" not in params  # a leaf the shipped spec has and a rotary model lacks
    opt = lopt.pretrained("transformer-lm", total_steps=25)
    batch = {"tokens": jax.random.randint(jax.random.key(1), (8, 13), 0, 40)}
    _, _, losses = optax_loop.train_params(m.loss, params, opt, 25, lambda key: batch)
    assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
