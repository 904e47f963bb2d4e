"""Typed attention options: pairs, mappings and the class give one config; bad values are refused when the config is
built; a registered variant brings its options class and its own loss, which the body averages without knowing it."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hetnet import attention
from hetnet.attention import softmax
from hetnet.attention_options import NoOptions, OPTION_TYPES, SparseOptions, option_names
from hetnet.config import AttentionConfig, TransformerConfig
from hetnet.models import TransformerLM


def test_pairs_mappings_and_the_class_make_one_config():
    as_class = TransformerConfig(attention="sparse", attention_options=SparseOptions(block=8, top_k=2))
    as_pairs = TransformerConfig(attention="sparse", attention_options=(("block", 8), ("top_k", 2)))
    as_mapping = TransformerConfig(attention="sparse", attention_options={"top_k": 2, "block": 8})
    assert as_class == as_pairs == as_mapping and hash(as_class) == hash(as_pairs)
    assert isinstance(as_pairs.attention_config.options, SparseOptions)
    assert as_pairs.attention_options.group_size == 8 and as_pairs.attention_options.index_width == 16


def test_neutreno_lambda_keeps_its_name_in_pairs():
    cfg = TransformerConfig(attention="neutreno", attention_options=(("lambda", 0.25),))
    assert cfg.attention_options.lambda_ == 0.25 and "lambda" in option_names("neutreno")


def test_switching_variant_by_replace_needs_no_options_unless_some_were_set():
    base = TransformerConfig(d_model=8, num_heads=2)
    assert dataclasses.replace(base, attention="linear").attention_options == OPTION_TYPES["linear"]()
    tuned = TransformerConfig(d_model=8, num_heads=2, attention="sparse", attention_options={"block": 4})
    with pytest.raises(ValueError, match="attention 'linear' takes LinearOptions, got SparseOptions"):
        dataclasses.replace(tuned, attention="linear")


@pytest.mark.parametrize("options,match", [
    ({"block": 4.0}, "block must be an int >= 1, got 4.0"),
    ({"window": True}, "window must be an int"),
    ({"router": "indexer", "index_dim": 0}, "index_dim must be an int >= 1"),
    (SparseOptions(block=4, query_group=2, summary="none"), None),
    ("block=4", "must be SparseOptions, a mapping or \\(name, value\\) pairs"),
])
def test_values_are_checked_when_the_config_is_built(options, match):
    if match is None:
        assert AttentionConfig(d_model=8, num_heads=2, variant="sparse", options=options).options.group_size == 2
        return
    with pytest.raises(ValueError, match=match):
        AttentionConfig(d_model=8, num_heads=2, variant="sparse", options=options)


@dataclasses.dataclass(frozen=True)
class ScaledOptions:
    weight: float = 1.0


def _scaled_variant() -> types.ModuleType:
    """Softmax attention with a loss of its own: ``weight`` times the mean square of the layer's input."""
    module = types.ModuleType("scaled_softmax")
    module.init, module.axes = softmax.init, softmax.axes

    def apply(params, x, cfg, *, padding_mask=None, carry=None):
        dense = dataclasses.replace(cfg, variant="softmax", options=())
        return softmax.apply(params, x, dense, padding_mask=padding_mask)

    module.apply = apply
    module.aux_loss = lambda params, x, cfg, *, padding_mask=None: cfg.options.weight * jnp.mean(jnp.square(x))
    return module


@pytest.fixture
def scaled_variant():
    attention.register("scaled", _scaled_variant(), options=ScaledOptions)
    yield
    attention._VARIANTS.pop("scaled")
    OPTION_TYPES.pop("scaled")


def test_a_registered_variant_brings_its_options_and_its_own_loss(scaled_variant):
    cfg = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=3, max_len=8, attention="scaled",
                            attention_options={"weight": 2.0})
    model = TransformerLM(cfg)
    params = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, cfg.vocab_size)
    x = model.embed(params, tokens[:, :-1])
    states = model.body.residual_states(params, x)[:-1]
    norm = model.body.block.norm
    want = np.mean([2.0 * jnp.mean(jnp.square(norm.apply(jax.tree.map(lambda a: a[i], params["blocks"])["attn_norm"],
                                                               states[i]))) for i in range(3)])
    np.testing.assert_allclose(model.aux_loss(params, {"tokens": tokens}), want, rtol=1e-5)
    with pytest.raises(ValueError, match="attention 'scaled' has no option 'weights'"):
        dataclasses.replace(cfg, attention_options={"weights": 1.0})


def test_a_variant_without_a_loss_of_its_own_is_named():
    model = TransformerLM(TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=1, max_len=8))
    with pytest.raises(ValueError, match="aux_loss needs an attention variant with a loss of its own"):
        model.aux_loss(model.init(jax.random.key(0)), {"tokens": jnp.zeros((1, 8), jnp.int32)})


def test_register_refuses_options_that_are_not_a_frozen_dataclass():
    with pytest.raises(TypeError, match="options must be a frozen dataclass type"):
        attention.register("bad", _scaled_variant(), options=dict)
    assert "bad" not in attention.variants() and NoOptions() == NoOptions()
