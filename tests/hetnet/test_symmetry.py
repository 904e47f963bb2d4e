"""Symmetry soundness: permuting params by any group element the labels allow leaves the model's function unchanged."""

import dataclasses

import jax
import numpy as np
import pytest

from hetnet import attention, symmetry
from hetnet.config import ClassifierConfig, TransformerConfig
from hetnet.models import SequenceClassifier, TransformerLM

BASE = TransformerConfig(vocab_size=13, d_model=8, num_heads=2, d_ff=12, num_layers=1, max_len=6)
CONFIGS = {
    "mha-rms-gelu": BASE,
    "gqa-layer-swiglu": dataclasses.replace(BASE, num_heads=4, num_kv_heads=2, norm="layer", ffn="swiglu"),
    "deep-mqa": dataclasses.replace(BASE, num_heads=2, num_kv_heads=1, num_layers=3),
    "bidirectional-headdim": dataclasses.replace(BASE, causal=False, head_dim=3, num_heads=3),
}


def lm_logits_close_after(params, axes, perms, cfg, tokens):
    apply = jax.jit(TransformerLM.apply, static_argnums=2)
    before = apply(params, tokens, cfg)
    after = apply(symmetry.permute(params, axes, perms), tokens, cfg)
    return np.allclose(before, after, rtol=1e-4, atol=1e-5), float(np.max(np.abs(before - after)))


@pytest.mark.parametrize("name", CONFIGS)
def test_lm_function_invariant_under_label_permutations(name):
    cfg = CONFIGS[name]
    params, axes = TransformerLM.init(jax.random.key(0), cfg)
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, cfg.vocab_size)
    for seed in range(3):
        perms = symmetry.sample_permutations(jax.random.key(100 + seed), params, axes)
        close, err = lm_logits_close_after(params, axes, perms, cfg, tokens)
        assert close, f"seed {seed}: logits moved by {err}"


def test_sampled_element_is_not_trivial():
    params, axes = TransformerLM.init(jax.random.key(0), BASE)
    perms = symmetry.sample_permutations(jax.random.key(1), params, axes)
    assert {"embed", "blocks/0/mlp", "blocks/0/kv_heads", "blocks/0/qk_dim", "blocks/0/v_dim"} <= set(perms)
    moved = symmetry.permute(params, axes, perms)
    assert not np.allclose(moved["blocks"][0]["ffn"]["w_in"], params["blocks"][0]["ffn"]["w_in"])


def test_layer_local_labels_are_distinct_groups_per_layer():
    cfg = dataclasses.replace(BASE, num_layers=2)
    params, axes = TransformerLM.init(jax.random.key(0), cfg)
    assert axes["blocks"][0]["ffn"]["w_in"] == ("embed", "blocks/0/mlp")
    assert axes["blocks"][1]["ffn"]["w_in"] == ("embed", "blocks/1/mlp")
    assert axes["tokens"] == ("vocab", "embed")


def test_classifier_function_invariant_under_label_permutations():
    cfg = ClassifierConfig(dataclasses.replace(BASE, causal=False), num_classes=3, input_dim=4)
    params, axes = SequenceClassifier.init(jax.random.key(0), cfg)
    x = jax.random.normal(jax.random.key(1), (2, 5, 4))
    mask = np.array([[True] * 5, [True, True, True, False, False]])
    perms = symmetry.sample_permutations(jax.random.key(2), params, axes)
    before = SequenceClassifier.apply(params, x, cfg, padding_mask=mask)
    after = SequenceClassifier.apply(symmetry.permute(params, axes, perms), x, cfg, padding_mask=mask)
    np.testing.assert_allclose(before, after, rtol=1e-4, atol=1e-5)


def relabel(axes, path, axis, label):
    """Returns a copy of ``axes`` with one label replaced; ``path`` is a tuple of keys into the tree."""
    node = axes
    for key in path[:-1]:
        node = node[key]
    leaf = list(node[path[-1]])
    leaf[axis] = label
    node[path[-1]] = tuple(leaf)
    return axes


MISLABELS = {
    # w_out's hidden axis given its own group, so it is permuted independently of w_in's.
    "mlp-split": (("blocks", 0, "ffn", "w_out"), 0, "blocks/0/mlp_out"),
    # positions are tied to the token order, which is not a symmetry.
    "positions-permuted": (("positions",), 0, "blocks/0/pos"),
    # the value head axis given the query-key group.
    "v_dim-as-qk_dim": (("blocks", 0, "attn", "value"), 2, "blocks/0/qk_dim_wrong"),
}


@pytest.mark.parametrize("name", MISLABELS)
def test_wrong_label_breaks_the_symmetry_test(name):
    path, axis, label = MISLABELS[name]
    params, axes = TransformerLM.init(jax.random.key(0), BASE)
    axes = relabel(axes, path, axis, label)
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, BASE.vocab_size)
    perms = symmetry.sample_permutations(jax.random.key(3), params, axes)
    close, err = lm_logits_close_after(params, axes, perms, BASE, tokens)
    assert not close, f"a mislabelled axis went unnoticed (max change {err})"


def test_permute_then_invert_is_identity():
    params, axes = TransformerLM.init(jax.random.key(0), BASE)
    perms = symmetry.sample_permutations(jax.random.key(1), params, axes)
    back = symmetry.permute(symmetry.permute(params, axes, perms), axes, symmetry.invert(perms))
    jax.tree.map(np.testing.assert_array_equal, back, params)


VARIANT_OPTIONS = {"sparse": (("block", 2), ("top_k", 1)), "linear": (("chunk", 4),)}


@pytest.mark.parametrize("variant", attention.variants())
def test_every_attention_variant_keeps_the_symmetry(variant):
    cfg = dataclasses.replace(BASE, num_layers=2, attention=variant, attention_options=VARIANT_OPTIONS.get(variant, ()))
    params, axes = TransformerLM.init(jax.random.key(0), cfg)
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, cfg.vocab_size)
    perms = symmetry.sample_permutations(jax.random.key(2), params, axes)
    close, err = lm_logits_close_after(params, axes, perms, cfg, tokens)
    assert close, f"{variant}: logits moved by {err}"
