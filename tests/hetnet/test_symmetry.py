"""Symmetry soundness: permuting params by any group element the labels allow leaves the model's function unchanged."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hetnet import attention, symmetry
from hetnet.axes import Nested
from hetnet.classifier import SequenceClassifier
from hetnet.config import ClassifierConfig, TransformerConfig
from hetnet.models import TransformerLM

BASE = TransformerConfig(vocab_size=13, d_model=8, num_heads=2, d_ff=12, num_layers=1, max_len=6)
CONFIGS = {
    "mha-rms-gelu": BASE,
    "gqa-layer-swiglu": dataclasses.replace(BASE, num_heads=4, num_kv_heads=2, norm="layer", ffn="swiglu"),
    "deep-mqa": dataclasses.replace(BASE, num_heads=2, num_kv_heads=1, num_layers=3),
    "bidirectional-headdim": dataclasses.replace(BASE, causal=False, head_dim=3, num_heads=3),
}


def lm_logits_close_after(params, axes, perms, cfg, tokens):
    apply = jax.jit(TransformerLM(cfg).apply)
    before = apply(params, tokens)
    after = apply(symmetry.permute(params, axes, perms), tokens)
    return np.allclose(before, after, rtol=1e-4, atol=1e-5), float(np.max(np.abs(before - after)))


@pytest.mark.parametrize("name", CONFIGS)
def test_lm_function_invariant_under_label_permutations(name):
    cfg = CONFIGS[name]
    model = TransformerLM(cfg)
    params, axes = model.init(jax.random.key(0)), model.axes
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, cfg.vocab_size)
    for seed in range(3):
        perms = symmetry.sample_permutations(jax.random.key(100 + seed), params, axes)
        close, err = lm_logits_close_after(params, axes, perms, cfg, tokens)
        assert close, f"seed {seed}: logits moved by {err}"


def test_sampled_element_is_not_trivial():
    model = TransformerLM(BASE)
    params, axes = model.init(jax.random.key(0)), model.axes
    perms = symmetry.sample_permutations(jax.random.key(1), params, axes)
    nested = {Nested(f"blocks/{name}") for name in ("mlp", "kv_heads", "qk_dim", "v_dim")}
    assert {"embed"} | nested <= set(perms)
    moved = symmetry.permute(params, axes, perms)
    assert not np.allclose(moved["blocks"]["ffn"]["w_in"], params["blocks"]["ffn"]["w_in"])


def test_per_layer_groups_are_nested_in_the_layers_axis():
    """Stacked layers: a per-layer group gets one independent permutation per layer index."""
    cfg = dataclasses.replace(BASE, num_layers=3)
    model = TransformerLM(cfg)
    params, axes = model.init(jax.random.key(0)), model.axes
    assert axes["blocks"]["ffn"]["w_in"] == ("layers", "embed", Nested("blocks/mlp", "layers"))
    assert axes["blocks"]["attn_norm"]["scale"] == ("layers", "embed")
    assert axes["tokens"] == ("vocab", "embed")
    perms = symmetry.sample_permutations(jax.random.key(1), params, axes)
    mlp = perms[Nested("blocks/mlp")]
    assert mlp.shape == (3, cfg.d_ff) and "layers" not in perms
    assert len({tuple(np.asarray(row)) for row in mlp}) == 3
    moved = symmetry.permute(params, axes, {Nested("blocks/mlp"): mlp})
    for i in range(3):
        np.testing.assert_array_equal(moved["blocks"]["ffn"]["w_in"][i], params["blocks"]["ffn"]["w_in"][i][:, mlp[i]])


def test_one_permutation_for_every_layer_breaks_nothing_but_is_not_the_whole_group():
    """Permuting every layer's hidden units alike is also a symmetry; permuting layer 0 alone is one too, which a
    shared (un-nested) label could not express."""
    model = TransformerLM(CONFIGS["deep-mqa"])
    params, axes = model.init(jax.random.key(0)), model.axes
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, BASE.vocab_size)
    d_ff = CONFIGS["deep-mqa"].ffn_config.d_ff
    only_first = jnp.stack([jax.random.permutation(jax.random.key(5), d_ff)] + [jnp.arange(d_ff)] * 2)
    close, err = lm_logits_close_after(params, axes, {Nested("blocks/mlp"): only_first}, CONFIGS["deep-mqa"], tokens)
    assert close, err


def test_classifier_function_invariant_under_label_permutations():
    cfg = ClassifierConfig(dataclasses.replace(BASE, causal=False), num_classes=3, input_dim=4)
    model = SequenceClassifier(cfg)
    params, axes = model.init(jax.random.key(0)), model.axes
    x = jax.random.normal(jax.random.key(1), (2, 5, 4))
    mask = np.array([[True] * 5, [True, True, True, False, False]])
    perms = symmetry.sample_permutations(jax.random.key(2), params, axes)
    before = model.apply(params, x, padding_mask=mask)
    after = model.apply(symmetry.permute(params, axes, perms), x, padding_mask=mask)
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
    "mlp-split": (("blocks", "ffn", "w_out"), 1, Nested("blocks/mlp_out")),
    # positions are tied to the token order, which is not a symmetry.
    "positions-permuted": (("positions",), 0, "pos_permuted"),
    # the value head axis given the query-key group.
    "v_dim-as-qk_dim": (("blocks", "attn", "value"), 3, Nested("blocks/qk_dim_wrong")),
    # the hidden units permuted alike in every layer only is fine; permuted across layers (un-nested) is not.
    "mlp-shared-not-nested": (("blocks", "ffn", "w_out"), 1, "blocks/mlp"),
}


@pytest.mark.parametrize("name", MISLABELS)
def test_wrong_label_breaks_the_symmetry_test(name):
    path, axis, label = MISLABELS[name]
    cfg = dataclasses.replace(BASE, num_layers=2)
    model = TransformerLM(cfg)
    params, axes = model.init(jax.random.key(0)), model.axes
    axes = relabel(axes, path, axis, label)
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, BASE.vocab_size)
    perms = symmetry.sample_permutations(jax.random.key(3), params, axes)
    close, err = lm_logits_close_after(params, axes, perms, cfg, tokens)
    assert not close, f"a mislabelled axis went unnoticed (max change {err})"


@pytest.mark.parametrize("permute_layers", [False, True], ids=["exact", "layers-permuted"])
def test_permute_then_invert_is_identity(permute_layers):
    model = TransformerLM(dataclasses.replace(BASE, num_layers=3))
    params, axes = model.init(jax.random.key(0)), model.axes
    perms = symmetry.sample_permutations(jax.random.key(1), params, axes)
    if permute_layers:
        perms["layers"] = jax.random.permutation(jax.random.key(2), 3)
    back = symmetry.permute(symmetry.permute(params, axes, perms), axes, symmetry.invert(perms))
    jax.tree.map(np.testing.assert_array_equal, back, params)


VARIANT_OPTIONS = {"sparse": (("block", 2), ("top_k", 1)), "linear": (("chunk", 4),),
                   "sparse-indexer": (("block", 2), ("top_k", 1), ("router", "indexer"), ("index_dim", 3))}


@pytest.mark.parametrize("variant", attention.variants() + ("sparse-indexer",))
def test_every_attention_variant_keeps_the_symmetry(variant):
    cfg = dataclasses.replace(BASE, num_layers=2, attention=variant.split("-")[0],
                              attention_options=VARIANT_OPTIONS.get(variant, ()))
    model = TransformerLM(cfg)
    params, axes = model.init(jax.random.key(0)), model.axes
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, cfg.vocab_size)
    perms = symmetry.sample_permutations(jax.random.key(2), params, axes)
    close, err = lm_logits_close_after(params, axes, perms, cfg, tokens)
    assert close, f"{variant}: logits moved by {err}"
