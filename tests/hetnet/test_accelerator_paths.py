"""Accelerator code paths checked on CPU: bfloat16 compute over float32 params stays near float32, and the
attention kernel selection picks cuDNN exactly where it applies and never changes the result where it falls back."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hetnet.attention import softmax
from hetnet.config import AttentionConfig, TransformerConfig
from hetnet.models import TransformerLM
from hetnet.train import make_train_step

CFG = TransformerConfig(vocab_size=32, d_model=32, num_heads=4, d_ff=64, num_layers=2, max_len=16)


def test_bfloat16_compute_tracks_float32_training():
    tokens = jax.random.randint(jax.random.key(1), (8, CFG.max_len + 1), 0, CFG.vocab_size)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        model = TransformerLM(dataclasses.replace(CFG, dtype=dtype))
        params = model.init(jax.random.key(0))
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params)), "params stay float32"
        step = make_train_step(model.loss, optax.adam(1e-2))
        state = optax.adam(1e-2).init(params)
        curve = []
        for _ in range(5):
            params, state, metrics = step(params, state, {"tokens": tokens})
            curve.append(float(metrics["loss"]))
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
        losses[dtype] = np.array(curve)
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)
    assert losses["bfloat16"][-1] < losses["bfloat16"][0]


def test_bfloat16_model_computes_in_bfloat16():
    model = TransformerLM(dataclasses.replace(CFG, dtype="bfloat16"))
    params = model.init(jax.random.key(0))
    x = model.embed(params, jnp.zeros((1, 4), jnp.int32))
    assert x.dtype == jnp.bfloat16
    assert model.apply(params, jnp.zeros((1, 4), jnp.int32)).dtype == jnp.float32


def qk(dtype, head_dim=16, heads=4, kv_heads=2):
    q = jnp.zeros((2, 8, heads, head_dim), dtype)
    return q, jnp.zeros((2, 8, kv_heads, head_dim), dtype)


def attn_cfg(implementation=None):
    options = () if implementation is None else (("implementation", implementation),)
    return AttentionConfig(d_model=64, num_heads=4, num_kv_heads=2, options=options)


@pytest.mark.parametrize("case,expected", [
    (dict(), "cudnn"),
    (dict(dtype=jnp.float32), "xla"),
    (dict(head_dim=12), "xla"),
    (dict(head_dim=256), "xla"),
    (dict(mask=True), "xla"),
    (dict(platform="cpu"), "xla"),
])
def test_auto_selects_cudnn_only_where_it_applies(case, expected):
    q, k = qk(case.get("dtype", jnp.bfloat16), case.get("head_dim", 16))
    mask = jnp.ones((2, 8), bool) if case.get("mask") else None
    assert softmax.select_implementation(q, k, attn_cfg(), mask, platform=case.get("platform", "gpu")) == expected


def test_forced_cudnn_names_why_it_cannot_run_and_bad_choice_is_refused():
    q, k = qk(jnp.float32)
    with pytest.raises(ValueError, match="platform is 'cpu'.*compute dtype is float32"):
        softmax.select_implementation(q, k, attn_cfg("cudnn"), None, platform="cpu")
    with pytest.raises(ValueError, match="implementation must be one of .*got 'flash'"):
        attn_cfg("flash")
    assert softmax.select_implementation(*qk(jnp.bfloat16), attn_cfg("xla"), None, platform="gpu") == "xla"


def test_auto_equals_xla_where_it_falls_back():
    base = dataclasses.replace(CFG, dtype="bfloat16")
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, CFG.vocab_size)
    out = {}
    for choice in ("auto", "xla"):
        model = TransformerLM(dataclasses.replace(base, attention_options=(("implementation", choice),)))
        out[choice] = jax.jit(model.apply)(model.init(jax.random.key(0)), tokens)
    np.testing.assert_array_equal(out["auto"], out["xla"])
