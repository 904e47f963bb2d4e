"""NeuTRENO attention: the paper's fidelity term, threaded through the forward pass, with model-wide labels."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hetnet import axes as axes_lib
from hetnet import symmetry
from hetnet.config import TransformerConfig
from hetnet import Block
from hetnet.attention import neutreno
from hetnet.axes import Nested
from hetnet.models import Body, TransformerLM
from tests.hetnet import reference

CFG = TransformerConfig(vocab_size=11, d_model=8, num_heads=4, num_kv_heads=2, d_ff=12, num_layers=3, max_len=7,
                        attention="neutreno", attention_options=(("lambda", 0.4),))


MODEL = TransformerLM(CFG)


@pytest.fixture(scope="module")
def model():
    return MODEL.init(jax.random.key(0)), MODEL.axes


@pytest.fixture(scope="module")
def tokens():
    return jax.random.randint(jax.random.key(1), (2, 7), 0, CFG.vocab_size)


def test_matches_reference(model, tokens):
    params, _ = model
    got = jax.jit(MODEL.apply)(params, tokens)
    np.testing.assert_allclose(got, reference.neutreno_lm(params, tokens, CFG, 0.4), rtol=1e-4, atol=1e-5)


def test_lambda_zero_is_softmax_attention(model, tokens):
    params, _ = model
    zero = dataclasses.replace(CFG, attention_options=(("lambda", 0.0),))
    softmax = dataclasses.replace(CFG, attention="softmax", attention_options=())
    apply = lambda cfg: TransformerLM(cfg).apply(params, tokens)  # noqa: E731
    np.testing.assert_allclose(apply(zero), apply(softmax), rtol=1e-5, atol=1e-6)
    assert not np.allclose(apply(CFG), apply(softmax))


def test_head_and_value_axes_are_one_group_across_layers(model, tokens):
    params, axes = model
    assert axes["blocks"]["attn"]["value"] == ("layers", "embed", "model/kv_heads", "model/v_dim")
    assert axes["blocks"]["attn"]["query"][4] == Nested("blocks/qk_dim")  # query-key dims stay per layer
    before = MODEL.apply(params, tokens)
    for seed in range(3):
        perms = symmetry.sample_permutations(jax.random.key(seed), params, axes)
        after = MODEL.apply(symmetry.permute(params, axes, perms), tokens)
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


def test_per_layer_value_groups_would_be_wrong(model, tokens):
    # Scoping the value axes per layer (as softmax attention does) is not a symmetry of NeuTRENO.
    params, axes = model
    per_layer = {**axes, "blocks": axes_lib.map_labels(
        lambda l: Nested(l.replace("model/", "blocks/")) if isinstance(l, str) and l.startswith("model/") else l,
        axes["blocks"])}
    perms = symmetry.sample_permutations(jax.random.key(0), params, per_layer)
    after = MODEL.apply(symmetry.permute(params, per_layer, perms), tokens)
    assert not np.allclose(after, MODEL.apply(params, tokens), rtol=1e-4, atol=1e-5)


def test_causal(model, tokens):
    params, _ = model
    reference.assert_ignores_the_future(jax.jit(lambda t: MODEL.apply(params, t)), tokens, 4, CFG.vocab_size)


def test_a_block_without_the_first_layers_values_is_refused(model):
    """The carry is typed and required: NeuTRENO never falls back to softmax silently."""
    params, _ = model
    block = Block(CFG)
    first = jax.tree.map(lambda a: a[0], params["blocks"])
    x = jax.random.normal(jax.random.key(2), (1, 7, 8))
    with pytest.raises(TypeError, match="FirstValues"):
        block.apply(first, x)
    carry = block.first_carry(first, x)
    assert isinstance(carry, neutreno.FirstValues) and carry.values.shape == (1, 7, 2, 2)
    assert block.apply(first, x, carry=carry).shape == x.shape


def test_gradients_flow_through_first_layer_values():
    cfg = dataclasses.replace(CFG, num_layers=2, num_heads=2, num_kv_heads=None, max_len=4)
    params = TransformerLM(cfg).init(jax.random.key(0))
    body = {k: params[k] for k in ("positions", "blocks", "final_norm")}
    x = np.random.default_rng(0).normal(size=(1, 4, 8))
    with jax.enable_x64(True):
        body64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), body)
        # dot_product_attention's float32 softmax limits finite differences to ~1e-3 agreement.
        check_grads(Body(cfg).apply, (body64, jnp.asarray(x)), order=1, modes=("rev",),
                    atol=2e-3, rtol=2e-3)
