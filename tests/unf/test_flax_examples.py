"""Flax's own example models through the spec path: each spec is verified by ``check_symmetry`` or refused with a
message that lists what is missing; learned optimizers over them stay small whatever the unpermuted axes' sizes."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hetnet.axes import Nested
from tests.unf import flax_examples as ex
from unf import layers, lopt
from unf import spec as spec_lib

SYMMETRY_TOLERANCE = 1e-4


def tokens(vocab, length=10):
    return jax.random.randint(jax.random.key(0), (2, length), 0, vocab)


def meta_param_count(optimizer) -> int:
    shapes = jax.eval_shape(optimizer.init_meta_params, jax.random.key(0))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


@pytest.fixture(scope="module")
def lm1b():
    model = ex.Lm1bLM()
    x = tokens(model.vocab)
    return model, model.init(jax.random.key(1), x), x


def test_lm1b_sinusoidal_positions_break_the_embed_group_and_the_check_says_so(lm1b):
    model, variables, x = lm1b
    params = nn.unbox(variables)
    changes = spec_lib.check_symmetry(model.apply, params, spec_lib.from_flax(variables), x, key=jax.random.key(2))
    assert changes["embed"] > 0.1  # the position table is a constant the group cannot reach
    assert all(changes[g] < SYMMETRY_TOLERANCE for g in ("heads", "kv", "mlp"))
    fixed = spec_lib.from_flax(variables, {**spec_lib.FLAX_RULES, "embed": "unpermuted"})
    changes = spec_lib.check_symmetry(model.apply, params, fixed, x, key=jax.random.key(2))
    assert set(changes) == {"heads", "kv", "mlp"}
    assert max(changes.values()) < SYMMETRY_TOLERANCE


def test_lm1b_spec_is_the_same_inside_logical_axis_rules(lm1b):
    _, variables, _ = lm1b
    with nn.logical_axis_rules([("embed", None), ("mlp", "model"), ("heads", "model"), ("vocab", "model")]):
        inside = spec_lib.from_flax(variables)
    assert inside.leaf_axes == spec_lib.from_flax(variables).leaf_axes


def test_a_spec_of_the_variables_used_on_the_bare_params_says_which(lm1b):
    _, variables, _ = lm1b
    spec = spec_lib.from_flax(variables)
    with pytest.raises(ValueError, match=r"build it from variables\['params'\]"):
        spec.apply(spec.sample(jax.random.key(0)), nn.unbox(variables)["params"])
    with pytest.raises(ValueError, match=r"build it from variables\['params'\]"):
        lopt.equivariant_adam(spec).init(nn.unbox(variables)["params"])


def test_collections_besides_params_are_named():
    variables = {"params": {"w": jnp.ones((2, 3))}, "batch_stats": {"mean": jnp.zeros(3)}}
    with pytest.raises(ValueError, match=r"collections \['batch_stats'\] besides 'params'"):
        spec_lib.from_flax(variables)
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="non-parameter variables \\(BatchStat\\)"):
        spec_lib.from_flax(nnx.state(bn))


def test_mini_gpt_partitioned_by_mesh_axes_is_refused_naming_every_leaf():
    with pytest.raises(ValueError) as info:
        spec_lib.from_flax(ex.MiniGPT(nnx.Rngs(0)))
    message = str(info.value)
    assert "25 params leaves lack a logical name" in message
    assert "['head']['bias'] (29,): none" in message
    assert "['model'] look like mesh axes" in message


def test_tutorial_cnn_unannotated_is_refused_and_hand_labels_verify():
    with pytest.raises(ValueError, match=r"8 params leaves lack a logical name(.|\n)*\['linear1'\]\['kernel'\] "
                                         r"\(3136, 256\)"):
        spec_lib.from_flax(ex.TutorialCNN(nnx.Rngs(0)))
    model = ex.TutorialCNN(nnx.Rngs(0), side=8)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    spec = spec_lib.from_labels(params, ex.tutorial_cnn_labels(params))
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    changes = spec_lib.check_symmetry(ex.nnx_apply(model), params, spec, x, key=jax.random.key(3))
    assert set(changes) == {"c1", "h"} and max(changes.values()) < SYMMETRY_TOLERANCE
    wrong = spec_lib.from_labels(params, {**ex.tutorial_cnn_labels(params),
                                          "conv2": {"kernel": (None, None, "c1", "c2"), "bias": ("c2",)}})
    assert spec_lib.check_symmetry(ex.nnx_apply(model), params, wrong, x, key=jax.random.key(3))["c2"] > 0.1


def test_cnn_spec_of_the_tutorial_cnn_keeps_a_flattened_head_unpermuted():
    model = ex.TutorialCNN(nnx.Rngs(0), side=8)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    spec = spec_lib.cnn(model)
    by_hand = spec_lib.from_labels(params, ex.tutorial_cnn_labels(params))
    assert spec.leaf_names == by_hand.leaf_names
    renamed = {0: "c1", 2: "h", None: None}
    assert [tuple(renamed[a] for a in axes) for axes in spec.leaf_axes] == list(by_hand.leaf_axes)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    changes = spec_lib.check_symmetry(ex.nnx_apply(model), params, spec, x, key=jax.random.key(3))
    assert set(changes) == {0, 2} and max(changes.values()) < SYMMETRY_TOLERANCE
    with pytest.raises(ValueError, match=r"cnn layer 2 \('linear1'\) kernel reads 511 features, but layer 1 "
                                         r"\('conv2'\) gives 64"):
        spec_lib.cnn({**params, "linear1": {"kernel": np.zeros((511, 256)), "bias": np.zeros(256)}})


def test_the_tutorial_cnns_flattened_head_is_stepped_as_hidden_matrices_though_unpermuted():
    from unf.lopt import width

    model = ex.TutorialCNN(nnx.Rngs(0), side=8)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    spec = spec_lib.cnn(model)
    wide = dict(zip(spec.leaf_names, spec.leaf_unpermuted_widths))
    assert (wide["['conv2']['kernel']"], wide["['conv2']['bias']"], wide["['linear1']['kernel']"]) == ((3,), (0,), (0,))
    assert spec_lib.from_labels(params, spec.axes_tree()) == dataclasses.replace(spec, fan_in=())
    roles = {name: width.ROLES[r] for name, (r, _) in zip(spec.leaf_names, width.roles(spec, [False] * 8))}
    assert roles["['conv2']['kernel']"] == roles["['linear1']['kernel']"] == "hidden"
    assert (roles["['conv1']['kernel']"], roles["['linear2']['kernel']"]) == ("input", "output")

    batch = 4
    x = jax.random.normal(jax.random.key(0), (batch, 8, 8, 1))
    y = jnp.arange(batch) % 10
    apply = ex.nnx_apply(model)
    grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean())(params)

    def spread(spec_used):
        """The top singular values' spread of linear1's first update: the gradient has rank <= batch, and an
        orthogonalised step gives those directions near-equal singular values where Adam's sign-like step does
        not."""
        opt = lopt.pretrained("transformer-lm", total_steps=10, spec=spec_used)
        updates, _ = opt.update(grads, opt.init(params), params)
        s = np.linalg.svd(np.asarray(updates["linear1"]["kernel"]), compute_uv=False)[:batch]
        return s[0] / s[-1]

    assert spread(spec) < 2.0
    assert spread(spec_lib.from_labels(params, ex.tutorial_cnn_labels(params))) > 2.0  # no width axes: Adam's step


def test_a_conv_kernel_steps_along_its_orthogonalised_gradient_seen_as_one_taps_by_in_matrix():
    from unf.lopt import orthogonal

    model = ex.TutorialCNN(nnx.Rngs(0), side=8)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    y = jnp.arange(4)
    apply = ex.nnx_apply(model)
    grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean())(params)
    opt = lopt.pretrained("transformer-lm", total_steps=10, spec=spec_lib.cnn(model))
    step = np.asarray(opt.update(grads, opt.init(params), params)[0]["conv2"]["kernel"]).ravel()
    g = grads["conv2"]["kernel"]  # [3, 3, c1, c2]

    def cosine(direction):
        direction = np.asarray(direction).ravel()
        return -step @ direction / (np.linalg.norm(step) * np.linalg.norm(direction))

    # The first step's Nesterov momentum is a multiple of the gradient, and Newton-Schulz normalises it first.
    assert cosine(orthogonal.orthogonalize(g, ((0, 1, 2), (3,)))) > 0.9999
    assert cosine(orthogonal.orthogonalize(g, ((2,), (3,)))) < 0.99  # not per tap


class NamedLinenCNN(nn.Module):
    channels: int = 8

    @nn.compact
    def __call__(self, x):
        def named(*names):
            return {"kernel_init": nn.with_logical_partitioning(nn.initializers.lecun_normal(), names[:-1]),
                    "bias_init": nn.with_logical_partitioning(nn.initializers.zeros_init(), names[-1:])}

        x = jax.nn.relu(nn.Conv(self.channels, (3, 3), **named(None, None, None, "c1", "c1"))(x))
        x = jax.nn.relu(nn.Conv(2 * self.channels, (3, 3), **named(None, None, "c1", "c2", "c2"))(x))
        return nn.Dense(10, **named("c2", None, None))(x.mean(axis=(1, 2)))


def test_a_linen_conv_kernel_named_logically_is_one_taps_by_in_matrix_once_its_fan_in_is_traced():
    from unf.lopt import width

    model, x = NamedLinenCNN(), jax.random.normal(jax.random.key(0), (2, 6, 6, 1))
    variables = model.init(jax.random.key(1), x)
    params = nn.unbox(variables)["params"]
    named = spec_lib.from_flax(variables["params"], {**spec_lib.FLAX_RULES, "c1": "shared", "c2": "shared"})
    traced = spec_lib.with_fan_in(named, lambda p, inputs: model.apply({"params": p}, inputs), params, x)

    def view(spec, leaf):
        return dict(zip(spec.leaf_names, width.matrix_views(spec, [False] * spec.num_leaves)))[leaf]

    assert view(named, "['Conv_1']['kernel']") == ((2,), (3,))  # names alone: one [in, out] matrix per tap
    assert view(traced, "['Conv_1']['kernel']") == ((0, 1, 2), (3,))
    assert traced.leaf_axes == named.leaf_axes and traced.labels == named.labels
    assert dict(zip(traced.leaf_names, traced.fan_in))["['Dense_0']['kernel']"] == (0,)
    wider = nn.unbox(NamedLinenCNN(channels=4).init(jax.random.key(1), x))["params"]
    with pytest.raises(ValueError, match=r"params must be the tree spec describes.*\['Conv_0'\]\['bias'\]: "
                                         r"spec \(8,\), params \(4,\)"):
        spec_lib.with_fan_in(named, lambda p, inputs: NamedLinenCNN(channels=4).apply({"params": p}, inputs), wider, x)
    with pytest.raises(TypeError, match="spec must be a WeightSpaceSpec .*got dict"):
        spec_lib.with_fan_in({"Conv_0": None}, lambda p, inputs: model.apply({"params": p}, inputs), params, x)


def test_a_cnn_named_for_sharding_marks_its_flattened_head_by_the_unpermuted_width_rule():
    def named(*names):
        return {"kernel_init": nnx.with_partitioning(nnx.initializers.lecun_normal(), names[:-1], eager_sharding=False),
                "bias_init": nnx.with_partitioning(nnx.initializers.zeros_init(), names[-1:], eager_sharding=False)}

    class NamedCNN(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(1, 8, kernel_size=(3, 3), rngs=rngs, **named(None, None, None, "c1", "c1"))
            self.conv2 = nnx.Conv(8, 16, kernel_size=(3, 3), rngs=rngs, **named(None, None, "c1", "flat", "flat"))
            self.linear1 = nnx.Linear(2 * 2 * 16, 32, rngs=rngs, **named("flat", "h", "h"))
            self.linear2 = nnx.Linear(32, 10, rngs=rngs, **named("h", None, None))

    model = NamedCNN(nnx.Rngs(0))
    rules = {**spec_lib.FLAX_RULES, "c1": "shared", "h": "shared", "flat": "unpermuted_width"}
    spec = spec_lib.from_flax(model, rules)
    by_layout = spec_lib.cnn(model)
    assert spec.unpermuted_widths == by_layout.unpermuted_widths
    assert [tuple(a is None for a in axes) for axes in spec.leaf_axes] == [
        tuple(a is None for a in axes) for axes in by_layout.leaf_axes]
    # The layers' types give the kernels' fan-in, so each conv kernel is one [taps x in, out] matrix, as by layout.
    assert spec.fan_in == by_layout.fan_in
    from unf.lopt import width

    views = width.matrix_views(spec, [False] * spec.num_leaves)
    assert views == width.matrix_views(by_layout, [False] * spec.num_leaves)
    assert dict(zip(spec.leaf_names, views))["['conv2']['kernel']"] == ((0, 1, 2), (3,))
    as_groups = spec_lib.from_flax(model, rules, io_as_groups=True)  # a flatten is never a permutation group
    assert as_groups.unpermuted_widths == spec.unpermuted_widths and as_groups.leaf_axes == spec.leaf_axes
    with pytest.raises(ValueError, match="rules map names to one of .*unpermuted_width.*got {'flat': 'wide'}"):
        spec_lib.from_flax(model, {**rules, "flat": "wide"})


def test_an_nnx_attention_output_kernel_named_any_way_is_one_heads_by_head_dim_matrix():
    from unf.lopt import width

    def named(*names):
        return nnx.with_partitioning(nnx.initializers.lecun_normal(), names, eager_sharding=False)

    class Attention(nnx.Module):
        def __init__(self, rngs):
            # Names in an order the labels alone would misread: the output kernel does not end with "embed".
            self.attn = nnx.MultiHeadAttention(
                num_heads=2, in_features=8, qkv_features=8, out_features=8, use_bias=False, decode=False,
                kernel_init=named("width", "heads", "kv"), out_kernel_init=named("heads", "kv", "width"),
                rngs=rngs)

    model = Attention(nnx.Rngs(0))
    rules = {**spec_lib.FLAX_RULES, "width": "shared"}
    spec = spec_lib.from_flax(model, rules)
    fan_in = dict(zip(spec.leaf_names, spec.leaf_fan_in))
    assert fan_in["['attn']['out']['kernel']"] == (0, 1) and fan_in["['attn']['query']['kernel']"] == (0,)
    views = dict(zip(spec.leaf_names, width.matrix_views(spec, [False] * spec.num_leaves)))
    assert views["['attn']['out']['kernel']"] == ((0, 1), (2,))
    assert views["['attn']['query']['kernel']"] == ((0,), (1, 2))
    x = jax.random.normal(jax.random.key(0), (2, 5, 8))
    inferred = spec_lib.infer(model.attn, x)
    assert inferred.fan_in == spec.fan_in


def test_an_nnx_einsum_kernel_contracts_the_axes_its_einsum_string_shares_with_the_input():
    def named(*names):
        return nnx.with_partitioning(nnx.initializers.lecun_normal(), names, eager_sharding=False)

    class Einsums(nnx.Module):  # Gemma writes its projections so: the contracted axis need not lead
        def __init__(self, rngs):
            self.up = nnx.Einsum("bd,df->bf", (8, 16), kernel_init=named("embed", "mlp"), bias_shape=None, rngs=rngs)
            self.heads = nnx.Einsum("bf,hfk->bhk", (2, 16, 4), kernel_init=named("heads", "mlp", "kv"),
                                    bias_shape=None, rngs=rngs)

        def __call__(self, x):
            return self.heads(jax.nn.relu(self.up(x))).sum(-1)

    model, x = Einsums(nnx.Rngs(0)), jnp.ones((3, 8))
    spec = spec_lib.from_flax(model)
    assert dict(zip(spec.leaf_names, spec.fan_in)) == {"['heads']['kernel']": (1,), "['up']['kernel']": (0,)}
    assert spec_lib.with_fan_in(spec, model, x).fan_in == spec.fan_in  # what the computation reads


def test_scan_stacked_gpt_with_sequential_mlps_keeps_one_group_per_layer():
    model = ex.ScanGPT(nnx.Rngs(0))
    spec = spec_lib.from_flax(model)
    named = dict(zip(spec.leaf_names, spec.leaf_axes))
    assert named["['blocks']['mlp']['layers'][0]['kernel']"] == ("layers", "embed", Nested("mlp"))
    assert named["['blocks']['mlp']['layers'][2]['kernel']"] == ("layers", Nested("mlp"), "embed")
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    changes = spec_lib.check_symmetry(ex.nnx_apply(model), params, spec, tokens(23), key=jax.random.key(4))
    assert len(changes) == 4 and max(changes.values()) < SYMMETRY_TOLERANCE


def test_check_symmetry_rejects_bad_arguments(lm1b):
    model, variables, x = lm1b
    spec = spec_lib.from_flax(variables)
    params = nn.unbox(variables)
    with pytest.raises(ValueError, match="samples must be a positive int"):
        spec_lib.check_symmetry(model.apply, params, spec, x, key=jax.random.key(0), samples=0)
    with pytest.raises(TypeError, match="key must be a jax PRNG key"):
        spec_lib.check_symmetry(model.apply, params, spec, x, key=0)
    with pytest.raises(TypeError, match="spec must be a WeightSpaceSpec"):
        spec_lib.check_symmetry(model.apply, params, "spec", x, key=jax.random.key(0))


def test_learned_optimizers_cost_nothing_per_unpermuted_position():
    cnn = ex.TutorialCNN(nnx.Rngs(0))
    params = jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(cnn, nnx.Param)))
    spec = spec_lib.from_labels(params, ex.tutorial_cnn_labels(params))
    assert spec.leaf_shapes[spec.leaf_names.index("['linear1']['kernel']")] == (3136, 256)
    assert meta_param_count(lopt.EquivariantAdam(spec)) < 1_000_000
    with pytest.raises(ValueError, match=r"\['linear1'\]\['kernel'\] axis 0 \(size 3136\)(.|\n)*unpermuted_as_groups"):
        layers.EquivariantLinear(spec, 8, 2)

    vocab, d = 32_768, 16
    lm = {"embed": jax.ShapeDtypeStruct((vocab, d), jnp.float32),
          "mlp": {"up": jax.ShapeDtypeStruct((d, 4 * d), jnp.float32),
                  "down": jax.ShapeDtypeStruct((4 * d, d), jnp.float32)},
          "unembed": jax.ShapeDtypeStruct((d, vocab), jnp.float32)}
    labels = {"embed": (None, "embed"), "mlp": {"up": ("embed", "mlp"), "down": ("mlp", "embed")},
              "unembed": ("embed", None)}
    small = lopt.EquivariantAdam(spec_lib.from_labels(lm, labels))
    assert meta_param_count(small) < 1_000_000
    wider = {**lm, "embed": jax.ShapeDtypeStruct((7, d), jnp.float32), "unembed": jax.ShapeDtypeStruct((d, 7),
                                                                                                       jnp.float32)}
    assert meta_param_count(lopt.EquivariantAdam(spec_lib.from_labels(wider, labels))) == meta_param_count(small)


def test_fresh_equivariant_adam_is_adam_on_the_scan_stacked_gpt_in_nnx_optimizer():
    model = ex.ScanGPT(nnx.Rngs(0))
    reference = ex.ScanGPT(nnx.Rngs(0))
    spec = spec_lib.from_flax(model)
    learned = nnx.Optimizer(model, lopt.equivariant_adam(spec, layer_key="blocks"), wrt=nnx.Param)
    adam = nnx.Optimizer(reference, optax.adam(1e-3), wrt=nnx.Param)
    x = tokens(23)

    def loss(m):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(m(x), x))

    for _ in range(2):
        learned.update(model, nnx.grad(loss)(model))
        adam.update(reference, nnx.grad(loss)(reference))
    got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    want = nnx.to_pure_dict(nnx.state(reference, nnx.Param))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=1e-6)


def docs_lm_params_from_hetnet(h: dict) -> dict:
    """The DocsLM's pure params holding a hetnet TransformerLM's tensors (positions left out; a SwiGLU gate and
    LayerNorm offsets where the hetnet model has them)."""
    b = h["blocks"]
    norm = lambda n, i=None: {k: (v if i is None else v[i]) for k, v in n.items()}  # noqa: E731
    layers = {}
    for i in range(b["attn"]["query"].shape[0]):
        d, kv, g, hd = b["attn"]["query"].shape[1:]
        layers[i] = {"query": b["attn"]["query"][i].reshape(d, kv * g, hd), "key": b["attn"]["key"][i],
                     "value": b["attn"]["value"][i], "out": b["attn"]["out"][i].reshape(kv * g, hd, d),
                     "attn_norm": norm(b["attn_norm"], i), "mlp_norm": norm(b["ffn_norm"], i),
                     "up": {"kernel": b["ffn"]["w_in"][i]}, "down": {"kernel": b["ffn"]["w_out"][i]}}
        if "w_gate" in b["ffn"]:
            layers[i]["gate"] = {"kernel": b["ffn"]["w_gate"][i]}
    return {"embed": {"embedding": h["tokens"]}, "layers": layers, "final_norm": norm(h["final_norm"]),
            "lm_head": {"kernel": h["unembed"]}}


@pytest.mark.parametrize("variant", [{}, {"gated": True, "layer_norm": True}], ids=["gelu-rms", "swiglu-layernorm"])
def test_the_shipped_optimizer_serves_a_flax_docs_transformer_as_it_serves_hetnet(variant):
    from hetnet import TransformerConfig, TransformerLM

    kinds = dict(ffn="swiglu", norm="layer") if variant else {}
    model = TransformerLM(TransformerConfig(vocab_size=19, d_model=16, num_heads=4, num_kv_heads=2, d_ff=32,
                                            num_layers=2, max_len=8, **kinds))
    hetnet_params = {**model.init(jax.random.key(0)), "positions": jnp.zeros((1, 16))}
    flax_model = ex.DocsLM(nnx.Rngs(0), **variant)
    state = nnx.state(flax_model, nnx.Param)
    nnx.replace_by_pure_dict(state, docs_lm_params_from_hetnet(hetnet_params))
    served, reference = (lopt.pretrained("transformer-lm", total_steps=100) for _ in range(2))
    told = lopt.pretrained("transformer-lm", total_steps=100, model=flax_model)  # names from the model, bare params
    served_state, reference_state = served.init(state), reference.init(hetnet_params)
    flax_params = nnx.to_pure_dict(state)
    told_state = told.init(flax_params)
    for step in range(2):
        grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(step), p.shape), hetnet_params)
        grads["positions"] = jnp.zeros_like(grads["positions"])
        want, reference_state = reference.update(grads, reference_state, hetnet_params)
        got, served_state = served.update(docs_lm_params_from_hetnet(grads), served_state, flax_params)
        also, told_state = told.update(docs_lm_params_from_hetnet(grads), told_state, flax_params)
        jax.tree.map(np.testing.assert_array_equal, also, got)
        for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0],
                                jax.tree.leaves(docs_lm_params_from_hetnet(want))):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))


def nnx_losses_under(model, opt, x, steps):
    optimizer = nnx.Optimizer(model, opt, wrt=nnx.Param)

    def loss(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x)[:, :-1], x[:, 1:]).mean()

    losses = [float(loss(model))]
    for _ in range(steps):
        optimizer.update(model, nnx.grad(loss)(model))
        losses.append(float(loss(model)))
    return losses


def test_the_shipped_optimizer_trains_a_flax_docs_transformer_in_nnx_optimizer_and_refuses_what_it_cannot_serve():
    model = ex.DocsLM(nnx.Rngs(0))
    losses = nnx_losses_under(model, lopt.pretrained("transformer-lm", total_steps=20), tokens(19, 12), 5)
    assert losses[-1] < losses[0] - 0.2
    with pytest.raises(ValueError, match=r"pretrained\(\.\.\., model=variables\['params'\]\)"):
        lopt.pretrained("transformer-lm", total_steps=20).init(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    # Neither a decoder of the hetnet make nor named: the leaves are listed and the spec route named.
    route = r"spec=unf.spec.infer\(model, \*example_inputs\).*unf.spec.from_labels"
    with pytest.raises(ValueError, match=r"these leaves have none: \[.conv1/bias.*" + route):
        nnx.Optimizer(ex.TutorialCNN(nnx.Rngs(0)), lopt.pretrained("transformer-lm", total_steps=20), wrt=nnx.Param)

    class Odd(nnx.Module):
        def __init__(self, rngs):
            self.w = nnx.Param(ex.logical_kernel("embed", "widgets")(rngs.params(), (4, 3)))

    # Named on every axis, but with a name the rules do not define: that is said too.
    with pytest.raises(ValueError, match=r"Nor do its logical names make a spec: .*'widgets'.*spec=unf.spec"):
        nnx.Optimizer(Odd(nnx.Rngs(0)), lopt.pretrained("transformer-lm", total_steps=20), wrt=nnx.Param)


def test_the_shipped_optimizer_made_inside_a_sharded_create_function_trains_and_shards_its_state():
    # The Flax guide's multi-device pattern: model and optimizer made inside nnx.jit under logical axis rules, their
    # state constrained to its partition specs; the optimizer then runs in another jit.
    mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = (("embed", None), ("mlp", "model"), ("q_heads", "model"), ("kv_heads", None), ("kv", None),
             ("vocab", None))
    x = tokens(19, 12)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        @nnx.jit
        def create():
            model = ex.DocsLM(nnx.Rngs(0))
            optimizer = nnx.Optimizer(model, lopt.pretrained("transformer-lm", total_steps=20), wrt=nnx.Param)
            state = nnx.state((model, optimizer))
            nnx.update((model, optimizer), jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state)))
            return model, optimizer

        model, optimizer = create()

        @nnx.jit
        def step(model, optimizer):
            def loss(m):
                return optax.softmax_cross_entropy_with_integer_labels(m(x)[:, :-1], x[:, 1:]).mean()

            value, grads = nnx.value_and_grad(loss)(model)
            optimizer.update(model, grads)
            return value

        losses = [float(step(model, optimizer)) for _ in range(5)]
    assert losses[-1] < losses[0] - 0.2
    # The state is held in the hetnet layout the rule runs in: the layers' up-projections stacked as ``w_in``
    # [layers, embed, mlp], whose MLP axis is sharded as the kernels' is.
    state = optimizer.opt_state
    moments = [state.momenta[0]["blocks"]["ffn"]["w_in"], state.second_moment["blocks"]["ffn"]["w_in"]]
    assert all(m[...].sharding.spec == jax.sharding.PartitionSpec(None, None, "model") for m in moments)
    assert model.layers[0].up.kernel[...].sharding.spec == jax.sharding.PartitionSpec(None, "model")


def test_a_flax_model_named_on_every_axis_is_served_by_its_names_as_by_its_spec():
    """The scan-stacked GPT has MLP biases, which no hetnet decoder has: nnx.Optimizer serves it by the logical
    names it carries, exactly as the rule given the spec of those names does on the bare params."""
    x = tokens(23, 12)
    model = ex.ScanGPT(nnx.Rngs(0))
    spec = spec_lib.from_flax(model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    apply = ex.nnx_apply(model)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, x)[:, :-1], x[:, 1:]).mean()

    opt = lopt.pretrained("transformer-lm", total_steps=20, spec=spec)
    state, want = opt.init(params), params
    for _ in range(3):
        updates, state = opt.update(jax.grad(loss)(want), state, want)
        want = optax.apply_updates(want, updates)
    losses = nnx_losses_under(model, lopt.pretrained("transformer-lm", total_steps=20), x, 3)
    got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
    assert losses[-1] < losses[0] - 0.2


def test_a_linen_lm1b_model_with_mlp_biases_is_served_through_model_by_its_names(lm1b):
    model, variables, x = lm1b
    params = nn.unbox(variables["params"])
    opt = lopt.pretrained("transformer-lm", total_steps=20, model=variables["params"])
    by_spec = lopt.pretrained("transformer-lm", total_steps=20, spec=spec_lib.from_flax(variables["params"]))

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x)[:, :-1], x[:, 1:]).mean()

    runs = []
    for o in (opt, by_spec):
        p, state = params, o.init(params)
        for _ in range(3):
            u, state = o.update(jax.grad(loss)(p), state, p)
            p = optax.apply_updates(p, u)
        runs.append(p)
    jax.tree.map(np.testing.assert_array_equal, *runs)
    assert float(loss(runs[0])) < float(loss(params)) - 0.2
