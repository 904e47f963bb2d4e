"""Bad input gets an error that names the argument and the fix."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hetnet import axes as axes_lib
from hetnet.attention import Attention
from hetnet.icl import ICLConfig
from hetnet.config import AttentionConfig, NormConfig, TransformerConfig
from hetnet.models import TransformerLM

CFG = TransformerConfig(vocab_size=10, d_model=8, num_heads=2, num_layers=1, max_len=8)
MODEL = TransformerLM(CFG)


@pytest.fixture(scope="module")
def lm():
    return MODEL.init(jax.random.key(0)), MODEL.axes


def test_d_model_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"d_model \(10\) must be divisible by num_heads \(4\)"):
        TransformerConfig(d_model=10, num_heads=4)


def test_heads_not_multiple_of_kv_heads():
    with pytest.raises(ValueError, match="num_heads .* must be a multiple of num_kv_heads"):
        AttentionConfig(d_model=12, num_heads=6, num_kv_heads=4)


@pytest.mark.parametrize("field,value", [("norm", "batch"), ("ffn", "relu6"), ("dtype", "int8"), ("num_layers", 0),
                                         ("remat", True)])
def test_bad_config_field_is_named(field, value):
    with pytest.raises(ValueError, match=field.replace("_", "_")):
        TransformerConfig(**{field: value})


@pytest.mark.parametrize("field,value,match", [
    ("d_ff", 0, "d_ff must be a positive int, got 0"),  # not read as "unset" and replaced by 4 * d_model
    ("causal", "yes", "causal must be a bool"),
    ("rope_base", float("inf"), "rope_base must be a finite number > 1"),
])
def test_a_value_that_would_be_ignored_or_misread_is_refused(field, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TransformerConfig(**{field: value}, positions="rope")


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "8", None])
@pytest.mark.parametrize("field", ["d_model", "num_heads", "num_layers", "vocab_size"])
def test_a_size_that_is_not_a_positive_int_is_named(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a positive int, got {value!r}"):
        TransformerConfig(**{field: value})


def test_numpy_integer_sizes_are_taken_as_python_ints():
    import dataclasses
    import json

    cfg = TransformerConfig(vocab_size=np.int64(10), d_model=np.int32(8), num_heads=np.int64(2), d_ff=np.uint8(16),
                            num_layers=np.int64(1), max_len=np.int16(8))
    assert cfg == dataclasses.replace(CFG, d_ff=16)
    assert all(type(v) is int for v in (cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.num_layers))
    json.dumps(dataclasses.asdict(cfg))  # a checkpoint's config round trip
    assert ICLConfig(layers=np.int64(2)).layers == 2


@pytest.mark.parametrize("eps", [0.0, -1e-6, float("nan"), float("inf"), "1e-6", True])
def test_norm_eps_must_be_a_finite_positive_number(eps):
    with pytest.raises(ValueError, match="norm eps must be a finite number > 0"):
        NormConfig(8, eps=eps)


def test_unknown_attention_variant(lm):
    with pytest.raises(ValueError, match="attention must be one of"):
        TransformerLM(TransformerConfig(attention="nope"))


def test_a_model_given_the_wrong_config_type():
    with pytest.raises(TypeError, match="TransformerLM takes a TransformerConfig, got AttentionConfig"):
        TransformerLM(AttentionConfig(d_model=8, num_heads=2))


@pytest.mark.parametrize("bad", [-1, 10, 99])
def test_tokens_outside_vocabulary(lm, bad):
    params, _ = lm
    tokens = np.zeros((1, 4), np.int32)
    tokens[0, 2] = bad
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, vocab_size\) = \[0, 10\)"):
        MODEL.apply(params, tokens)


def test_traced_out_of_range_tokens_give_nan_not_a_clamped_row(lm):
    params, _ = lm
    apply = jax.jit(MODEL.apply)
    assert np.all(np.isfinite(apply(params, jnp.array([[1, 2, 9]]))))
    assert np.any(np.isnan(apply(params, jnp.array([[1, 2, 10]]))))
    assert np.any(np.isnan(apply(params, jnp.array([[1, -1, 3]]))))  # negative: NaN, not the row of token vocab-1


def test_lm_loss_checks_targets(lm):
    params, _ = lm
    with pytest.raises(ValueError, match=r'batch\["tokens"\] must lie in \[0, vocab_size\)'):
        MODEL.loss(params, {"tokens": jnp.array([[1, 2, 10]])})
    loss = jax.jit(lambda p, t: MODEL.loss(p, {"tokens": t}))
    assert np.isfinite(loss(params, jnp.array([[1, 2, 3]])))
    assert np.isnan(loss(params, jnp.array([[1, 2, 10]])))  # the last token is only a target
    assert np.isnan(loss(params, jnp.array([[1, 2, -4]])))
    with pytest.raises(ValueError, match=r"\[batch, seq \+ 1\] with seq >= 1"):
        MODEL.loss(params, {"tokens": jnp.array([[1]])})


@pytest.mark.parametrize("attention,options,match", [
    ("sparse", (("topk", 8),), "attention 'sparse' has no option 'topk'; it accepts"),
    ("softmax", (("lambda", 0.5),), "attention 'softmax' has no option 'lambda'; it accepts \\('implementation',\\)"),
    ("linear", (("chunk", 8), ("chunk", 16)), "option 'chunk' is given more than once"),
    ("neutreno", (("lambda", -0.5),), "option lambda must be finite and >= 0 \\(0 gives softmax attention\\), got -0.5"),
    ("neutreno", (("lambda", float("nan")),), "option lambda must be finite and >= 0"),
])
def test_unknown_or_repeated_attention_options_are_refused(attention, options, match):
    with pytest.raises(ValueError, match=match):
        TransformerConfig(vocab_size=10, d_model=8, num_heads=2, attention=attention, attention_options=options)


def test_a_permutation_of_another_width_is_refused(lm):
    params, axes = lm
    from hetnet import symmetry
    perms = {label: jnp.arange(n + 1) for label, n in axes_lib.check_axes(params, axes).items()}
    with pytest.raises(ValueError, match="made for params of another size"):
        symmetry.permute(params, axes, perms)


@pytest.mark.parametrize("block", ["standard", "hyperset"])
def test_padding_mask_of_wrong_shape_is_named_for_every_body(block):
    cfg = TransformerConfig(vocab_size=10, d_model=8, num_heads=2, num_layers=1, max_len=8, block=block)
    model = TransformerLM(cfg)
    with pytest.raises(ValueError, match=r"padding_mask must have shape \[batch, seq\] = \(1, 3\)"):
        model.apply(model.init(jax.random.key(0)), jnp.array([[1, 2, 3]]), padding_mask=jnp.ones((1, 4), bool))


def test_float_tokens_rejected(lm):
    with pytest.raises(TypeError, match="integer"):
        MODEL.apply(lm[0], np.zeros((1, 4), np.float32))


def test_sequence_longer_than_max_len(lm):
    with pytest.raises(ValueError, match="exceeds max_len 8"):
        MODEL.apply(lm[0], np.zeros((1, 9), np.int32))


@pytest.mark.parametrize("shape", [(2, 5), (3, 4), (2, 4, 1)])
def test_mask_of_wrong_shape(shape):
    cfg = AttentionConfig(d_model=8, num_heads=2)
    layer = Attention(cfg)
    x = jnp.zeros((2, 4, 8))
    with pytest.raises(ValueError, match=r"padding_mask must have shape \[batch, seq\] = \(2, 4\)"):
        layer.apply(layer.init(jax.random.key(0)), x, padding_mask=jnp.ones(shape, bool))


def test_axes_that_do_not_match_params(lm):
    params, axes = lm[0], copy.deepcopy(lm[1])
    axes["final_norm"]["scale"] = ("embed", None)
    with pytest.raises(ValueError, match=r"axes\['final_norm'\]\['scale'\] has 2 labels"):
        axes_lib.check_axes(params, axes)


def test_label_with_two_sizes(lm):
    params, axes = lm[0], copy.deepcopy(lm[1])
    axes["unembed"] = ("embed", "embed")
    with pytest.raises(ValueError, match="label 'embed' has size"):
        axes_lib.check_axes(params, axes)


def test_float_tokens_under_jit_name_the_argument(lm):
    with pytest.raises(TypeError, match=r"tokens must be an integer array \(token ids\), got dtype float32"):
        jax.jit(MODEL.apply)(lm[0], jnp.zeros((1, 4), jnp.float32))


def test_params_of_another_depth_name_num_layers():
    deeper = TransformerLM(TransformerConfig(vocab_size=10, d_model=8, num_heads=2, num_layers=3, max_len=8))
    with pytest.raises(ValueError, match=r"hold \[1\] stacked layers but the config has num_layers=3"):
        jax.jit(deeper.apply)(MODEL.init(jax.random.key(0)), jnp.zeros((1, 4), jnp.int32))


@pytest.mark.parametrize("method", ["loss", "accuracy"])
def test_a_classifier_batch_that_does_not_fit_is_named(method):
    from hetnet import ClassifierConfig, SequenceClassifier

    backbone = TransformerConfig(vocab_size=10, d_model=8, num_heads=2, num_layers=1, max_len=8, causal=False)
    model = SequenceClassifier(ClassifierConfig(backbone, num_classes=3))
    params, tokens = model.init(jax.random.key(0)), jnp.zeros((2, 5), jnp.int32)
    fn = getattr(model, method)
    with pytest.raises(ValueError, match=r"""batch must be a dict with "inputs" and "labels".*got \['labels', 'tokens'\]"""):
        fn(params, {"tokens": tokens, "labels": jnp.array([0, 1])})
    with pytest.raises(ValueError, match=r"""batch\["labels"\] must have shape \[batch\] = \(2,\).*got shape \(2, 2\)"""):
        fn(params, {"inputs": tokens, "labels": jnp.array([[0, 1], [1, 0]])})
    with pytest.raises(ValueError, match=r"must lie in \[0, num_classes\) = \[0, 3\); got values in \[0, 3\]"):
        fn(params, {"inputs": tokens, "labels": jnp.array([0, 3])})
    assert np.isnan(jax.jit(fn)(params, {"inputs": tokens, "labels": jnp.array([0, 3])}))  # unseen under jit: NaN
    assert np.isfinite(jax.jit(fn)(params, {"inputs": tokens, "labels": jnp.array([0, 2])}))


@pytest.mark.parametrize("field,value", [("layers", 0), ("heads", True), ("init_std", float("nan")),
                                         ("init_std", -0.05), ("init_std", "0.05")])
def test_icl_config_names_a_bad_field(field, value):
    with pytest.raises(ValueError, match=f"{field} must be"):
        ICLConfig(**{field: value})
