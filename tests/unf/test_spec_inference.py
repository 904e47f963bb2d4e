"""unf.spec.infer: a spec read off the model's computation is a symmetry of the model (random group elements leave
its output unchanged), matches the hand-written specs where those are exact, and pins what it cannot move."""

from __future__ import annotations

import functools
import warnings

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import unf
from hetnet.axes import LAYERS, Nested
from hetnet.config import TransformerConfig
from hetnet.models import TransformerLM
from tests.unf import flax_examples
from unf import spec as spec_lib
from unf.spec import inference
from unf.lopt import width

KEY = jax.random.key(0)


def canonical(spec) -> tuple:
    """Returns the spec's labels with every group renamed by its first appearance (leaf order), so two specs that
    partition the axes alike compare equal; None, UNPERMUTED_WIDTH, layers and nesting are kept, and a group of one
    (a size-1 axis, which no permutation moves) reads as None."""
    names: dict = {}
    out = []
    for labels, wide, shape in zip(spec.leaf_axes, spec.leaf_unpermuted_widths, spec.leaf_shapes):
        row = []
        for i, label in enumerate(labels):
            if i in wide:
                row.append("width")
            elif label == LAYERS:
                row.append(label)
            elif label is None or shape[i] == 1:
                row.append(None)
            else:
                row.append(("nested" if isinstance(label, Nested) else "group", names.setdefault(label, len(names))))
        out.append(tuple(row))
    return tuple(out)


def assert_symmetry(fn, params, spec, *args):
    changes = spec_lib.check_symmetry(fn, params, spec, *args, key=KEY, samples=2)
    assert changes, "the inferred spec has no groups"
    assert max(changes.values()) < 1e-5, changes


class ResNetBlock(nn.Module):
    """The Flax imagenet example's ResNet block: a projection shortcut where the shape changes."""

    filters: int
    strides: tuple = (1, 1)

    @nn.compact
    def __call__(self, x, train):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        residual = x
        y = nn.relu(norm()(nn.Conv(self.filters, (3, 3), self.strides, use_bias=False)(x)))
        y = norm()(nn.Conv(self.filters, (3, 3), use_bias=False)(y))
        if residual.shape != y.shape:
            residual = norm(name="norm_proj")(nn.Conv(self.filters, (1, 1), self.strides, use_bias=False,
                                                      name="conv_proj")(residual))
        return nn.relu(residual + y)


class ResNet(nn.Module):
    stages: tuple = (2, 1)
    filters: int = 4

    @nn.compact
    def __call__(self, x, train=True):
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn_init")(
            nn.Conv(self.filters, (3, 3), use_bias=False, name="conv_init")(x)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, blocks in enumerate(self.stages):
            for j in range(blocks):
                x = ResNetBlock(self.filters * 2 ** i, (2, 2) if i > 0 and j == 0 else (1, 1))(x, train)
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


@pytest.fixture(scope="module")
def resnet():
    model = ResNet()
    x = jax.random.normal(KEY, (2, 8, 8, 3))
    variables = model.init(KEY, x)
    return model, variables["params"], variables["batch_stats"], x


def test_an_mlp_and_the_tutorial_cnn_get_the_hand_written_specs():
    params = {"l0": {"kernel": jnp.ones((3, 8)), "bias": jnp.ones(8)},
              "l1": {"kernel": jnp.ones((8, 6)), "bias": jnp.ones(6)},
              "l2": {"kernel": jnp.ones((6, 2)), "bias": jnp.ones(2)}}

    def mlp(p, x):
        for name in ("l0", "l1"):
            x = jax.nn.gelu(x @ p[name]["kernel"] + p[name]["bias"][None])
        return x @ p["l2"]["kernel"] + p["l2"]["bias"][None]

    assert canonical(spec_lib.infer(mlp, params, jnp.ones((4, 3)))) == canonical(spec_lib.mlp(params))
    cnn = flax_examples.TutorialCNN(nnx.Rngs(0), side=8)
    cnn_params = nnx.to_pure_dict(nnx.state(cnn, nnx.Param))
    inferred = spec_lib.infer(flax_examples.nnx_apply(cnn), cnn_params, jnp.ones((2, 8, 8, 1)))
    # The flatten ahead of the head: the second conv's channels and the flattened axis are width, unpermuted.
    assert canonical(inferred) == canonical(spec_lib.cnn(cnn_params))
    assert inferred.unpermuted_widths


@pytest.mark.parametrize("cfg", [
    dict(),
    dict(num_kv_heads=2, num_heads=4, ffn="swiglu", norm="layer"),
    dict(attention="neutreno"),
    dict(attention="linear"),
], ids=["softmax", "gqa-swiglu-layernorm", "neutreno", "linear"])
def test_a_scanned_hetnet_transformer_gets_its_own_labels_and_they_are_a_symmetry(cfg):
    config = TransformerConfig(**{**dict(vocab_size=11, d_model=8, num_heads=2, num_layers=2, max_len=6), **cfg})
    model = TransformerLM(config)
    params = model.init(KEY)
    tokens = jnp.arange(12).reshape(2, 6) % 11
    inferred = spec_lib.infer(model.apply, params, tokens)
    assert_symmetry(model.apply, params, inferred, tokens)
    reference = spec_lib.from_hetnet(params, model.axes)
    # Every axis the model's own labels permute across layers is one group here too (the residual stream), and a
    # group the labels nest in the layers is nested: one permutation per layer.
    assert inferred.fixed == (LAYERS,)
    by_leaf = dict(zip(reference.leaf_names, zip(reference.leaf_axes, inferred.leaf_axes)))
    embed = {b for a_row, b_row in by_leaf.values() for a, b in zip(a_row, b_row) if a == "embed"}
    assert len(embed) == 1 and None not in embed
    for a_row, b_row in by_leaf.values():
        for a, b in zip(a_row, b_row):
            if isinstance(b, Nested):
                assert isinstance(a, Nested), (a_row, b_row)
    if not cfg:  # no grouped heads: the inferred partition is the model's own, name for name
        assert canonical(inferred) == canonical(reference)
    # The shipped rule over the inferred spec makes the updates it makes on the model's own labels, bit for bit.
    grads = jax.grad(lambda p: model.loss(p, {"tokens": tokens}))(params)
    native = unf.lopt.pretrained("transformer-lm", total_steps=10)
    served = unf.lopt.pretrained("transformer-lm", total_steps=10, spec=inferred)
    want, _ = native.update(grads, native.init(params), params)
    got, _ = served.update(grads, served.init(params), params)
    chex.assert_trees_all_equal(got, want)


def test_the_flax_imagenet_resnet_keeps_each_stage_one_stream_and_is_a_symmetry(resnet):
    model, params, batch_stats, x = resnet

    def train_mode(p, x):  # batch statistics; the running averages it also computes are not returned
        return model.apply({"params": p, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])[0]

    inferred = spec_lib.infer(train_mode, params, x)
    assert_symmetry(train_mode, params, inferred, x)
    labels = jax.tree.map(lambda a: a, inferred.axes_tree(), is_leaf=lambda a: isinstance(a, tuple))
    stream = labels["conv_init"]["kernel"][3]
    # Identity shortcuts keep the stream's channels; the projection shortcut starts the next stage's stream.
    assert labels["ResNetBlock_0"]["Conv_1"]["kernel"][3] == stream == labels["ResNetBlock_1"]["Conv_0"]["kernel"][2]
    assert labels["ResNetBlock_2"]["conv_proj"]["kernel"][2] == stream
    nxt = labels["ResNetBlock_2"]["conv_proj"]["kernel"][3]
    assert nxt not in (stream, None) and labels["Dense_0"]["kernel"] == (nxt, None)
    assert labels["ResNetBlock_0"]["Conv_0"]["kernel"][3] not in (stream, nxt)
    # Inference mode reads the running averages: given as state they move with the params, as constants they pin.
    def eval_mode(p, s, x):
        return model.apply({"params": p, "batch_stats": s}, x, train=False)

    assert spec_lib.infer(eval_mode, params, x, state=batch_stats).leaf_axes == inferred.leaf_axes
    pinned = spec_lib.infer(lambda p, x: eval_mode(p, batch_stats, x), params, x)
    assert not pinned.permuted_sizes


def test_constants_pin_what_they_touch_and_dead_code_pins_nothing():
    lm = flax_examples.Lm1bLM()
    tokens = jnp.arange(20).reshape(2, 10) % 31
    params = nn.unbox(lm.init(KEY, tokens))["params"]
    apply = lambda p, t: lm.apply({"params": p}, t)  # noqa: E731
    inferred = spec_lib.infer(apply, params, tokens)
    # The sinusoidal table is a constant added to the stream: no permutation of embed can leave it in place, but
    # the stream still grows with the model, so the learned rules read the same roles and matrices as its names give.
    assert inferred.axes_tree()["Embed_0"]["embedding"] == (None, spec_lib.UNPERMUTED_WIDTH)
    assert inferred.leaf_axes[0] == (None, None)
    assert_symmetry(apply, params, inferred, tokens)
    named = spec_lib.from_flax(lm.init(KEY, tokens)["params"])  # boxed: its logical names
    assert inferred.leaf_names == named.leaf_names
    unstacked = [False] * named.num_leaves
    assert width.roles(inferred, unstacked) == width.roles(named, unstacked)
    assert width.matrix_views(inferred, unstacked) == width.matrix_views(named, unstacked)

    params = {"w": jnp.ones((3, 5)), "v": jnp.ones((5, 2))}
    table = jnp.arange(5.0)

    def fn(p, x):
        _unused = (x @ p["w"]) * table[None]  # computed, never returned
        return jnp.tanh(x @ p["w"]) @ p["v"]

    assert spec_lib.infer(fn, params, jnp.ones((1, 3))).axes_tree()["w"][1] is not None
    used = lambda p, x: (jnp.tanh(x @ p["w"]) * table[None]) @ p["v"]  # noqa: E731
    assert spec_lib.infer(used, params, jnp.ones((1, 3))).axes_tree()["w"] == (None, spec_lib.UNPERMUTED_WIDTH)


def test_patches_flattened_from_the_image_are_positions_not_width():
    patch, d = 2, 6
    params = {"embed": jnp.ones((patch * patch * 3, d)), "pos": jnp.ones((16, d)), "head": jnp.ones((d, 4))}

    def vit(p, image):  # [b, 8, 8, 3] -> 16 patches of 2 x 2 x 3
        b = image.shape[0]
        x = image.reshape(b, 4, patch, 4, patch, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, 16, patch * patch * 3)
        x = x @ p["embed"] + p["pos"][None]
        return jnp.mean(jax.nn.relu(x), axis=1) @ p["head"]

    inferred = spec_lib.infer(vit, params, jnp.ones((2, 8, 8, 3)))
    labels = inferred.axes_tree()
    assert labels["pos"][0] is None and labels["embed"][0] is None
    assert not inferred.unpermuted_widths
    assert labels["embed"][1] == labels["pos"][1] == labels["head"][0] is not None
    assert_symmetry(vit, params, inferred, jax.random.normal(KEY, (2, 8, 8, 3)))


def test_an_operation_it_does_not_know_is_named_and_pins_its_axes():
    params = {"w": jnp.ones((3, 5)), "v": jnp.ones((5, 2))}
    fn = lambda p, x: jnp.fft.fft(x @ p["w"], axis=-1).real @ p["v"]  # noqa: E731
    with pytest.warns(UserWarning, match="fft"):
        inferred = spec_lib.infer(fn, params, jnp.ones((1, 3)))
    assert inferred.axes_tree() == {"w": (None, None), "v": (None, None)}


def test_a_message_passing_network_keeps_its_hidden_units_through_gathers_and_scatters():
    ks = jax.random.split(KEY, 4)
    params = {"enc": jax.random.normal(ks[0], (5, 8)), "msg": jax.random.normal(ks[1], (8, 8)),
              "upd": jax.random.normal(ks[2], (8, 8)), "out": jax.random.normal(ks[3], (8, 2))}

    def gnn(p, graph):  # messages gathered at the senders, summed at the receivers (jraph's segment_sum)
        h = jnp.tanh(graph["nodes"] @ p["enc"])
        messages = jnp.tanh(h[graph["senders"]] @ p["msg"])
        h = jnp.tanh((h + jax.ops.segment_sum(messages, graph["receivers"], num_segments=h.shape[0])) @ p["upd"])
        return jax.ops.segment_sum(h, graph["graph"], num_segments=2) @ p["out"]

    graph = {"nodes": jax.random.normal(KEY, (6, 5)), "senders": jnp.array([0, 1, 2, 3, 4, 5, 0]),
             "receivers": jnp.array([1, 2, 0, 4, 5, 3, 2]), "graph": jnp.array([0, 0, 0, 1, 1, 1])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scatter-add is known
        inferred = spec_lib.infer(gnn, params, graph)
    assert_symmetry(gnn, params, inferred, graph)
    labels = inferred.axes_tree()
    # The node state is one group through the gather and the sum (the message adds to it); the update's output
    # is another, carried through the sum over each graph into the readout.
    assert labels["enc"][1] == labels["msg"][1] == labels["upd"][0] is not None
    assert labels["upd"][1] == labels["out"][0] not in (None, labels["enc"][1])
    assert labels["enc"][0] is None and labels["out"][1] is None
    # A write at a fixed position pins the axis it indexes.
    written = lambda p, x: (x @ p["enc"]).at[:, 0].set(0.0) @ p["out"]  # noqa: E731
    assert spec_lib.infer(written, params, jnp.ones((2, 5))).axes_tree()["enc"] == (None, None)


def test_an_nnx_model_with_batchnorm_is_inferred_in_one_call_and_served_by_the_shipped_rule():
    class CNN(nnx.Module):
        def __init__(self, rngs, c=8):
            self.conv1 = nnx.Conv(1, c, kernel_size=(3, 3), rngs=rngs)
            self.bn1 = nnx.BatchNorm(c, rngs=rngs)
            self.conv2 = nnx.Conv(c, 2 * c, kernel_size=(3, 3), rngs=rngs)
            self.bn2 = nnx.BatchNorm(2 * c, rngs=rngs)
            self.head = nnx.Linear(2 * c, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.bn1(self.conv1(x)))
            x = nnx.relu(self.bn2(self.conv2(x)))
            return self.head(x.mean(axis=(1, 2)))

    model = CNN(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (8, 8, 8, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every operation of the model is known
        inferred = spec_lib.infer(model, x)
    model.eval()
    assert spec_lib.infer(model, x).leaf_axes == inferred.leaf_axes
    with pytest.raises(ValueError, match=r"call infer\(model, \*args\)"):
        spec_lib.infer(model, x, state=nnx.state(model, nnx.BatchStat))
    model.train()
    by_name = dict(zip(inferred.leaf_names, width.roles(inferred, [False] * inferred.num_leaves)))
    assert width.ROLES[by_name["['conv2']['kernel']"][0]] == "hidden"
    assert width.ROLES[by_name["['conv1']['kernel']"][0]] == "input"
    assert width.ROLES[by_name["['head']['kernel']"][0]] == "output"
    optimizer = nnx.Optimizer(model, unf.lopt.pretrained("transformer-lm", total_steps=20, spec=inferred),
                              wrt=nnx.Param)
    labels = jnp.arange(8) % 10
    loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), labels).mean()  # noqa: E731
    before = float(loss(model))
    for _ in range(20):
        optimizer.update(model, nnx.grad(loss)(model))
    assert np.isfinite(float(loss(model))) and float(loss(model)) < 0.5 * before


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="fn must be callable"):
        spec_lib.infer("model", {"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="params holds no arrays"):
        spec_lib.infer(lambda p, x: x, {}, jnp.ones(3))
    with pytest.raises(TypeError, match=r"params leaf \['w'\] is a str"):
        spec_lib.infer(lambda p, x: x, {"w": "weights"}, jnp.ones(3))


def test_the_residual_digits_task_reads_its_spec_off_its_loss_and_it_is_a_symmetry():
    from unf.tasks import resnet_digits

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loss's take_along_axis gather is known
        task = resnet_digits(channels=4, blocks=1, batch=8)
    params = task.init(KEY)
    batch = task.sample_batch(jax.random.key(1))
    assert_symmetry(task.loss, params, task.spec, batch)
    labels = task.spec.axes_tree()
    assert labels["stage_1_block_0"]["proj"][2:] == (labels["stem"]["kernel"][3], labels["head"]["w"][0])
    with pytest.raises(ValueError, match="blocks must be a positive int"):
        resnet_digits(blocks=0)


def test_the_fan_in_read_off_the_computation_sets_each_leafs_role_and_matrix_view():
    from unf.tasks.text import nnx_gpt_lm

    task = nnx_gpt_lm(d_model=8, layers=1, heads=2, seq=6, batch=2)
    params = task.init(KEY)
    assert_symmetry(task.loss, params, task.spec, task.sample_batch(jax.random.key(1)))
    spec = task.spec
    fan_in = dict(zip(spec.leaf_names, spec.leaf_fan_in))
    view = dict(zip(spec.leaf_names, width.matrix_views(spec, [False] * spec.num_leaves)))
    role = {n: width.ROLES[r] for n, (r, _) in zip(spec.leaf_names, width.roles(spec, [False] * spec.num_leaves))}
    attention = "['blocks'][0]['attention']"
    # nnx.MultiHeadAttention's output kernel [heads, head_dim, features] contracts its first two axes: its matrix
    # is [heads x head_dim, features], as Muon would take it, not [heads, head_dim x features].
    assert fan_in[attention + "['out']['kernel']"] == (0, 1)
    assert view[attention + "['out']['kernel']"] == ((0, 1), (2,))
    assert view[attention + "['query']['kernel']"] == ((0,), (1, 2))
    # A [heads, head_dim] bias has two width axes but is added, never contracted: no matrix.
    assert fan_in[attention + "['query']['bias']"] == ()
    assert role[attention + "['query']['bias']"] == "vector" and view[attention + "['query']['bias']"] is None
    assert role["['token_embed']['embedding']"] == "input" and role["['readout']['kernel']"] == "output"
    assert role["['norm']['scale']"] == "vector"
    # The Muon baseline reads the same views.
    from unf import baselines

    dims = jax.tree.leaves(baselines.muon_dimensions(spec), is_leaf=lambda x: x is None or hasattr(x, "reduction_axis"))
    muon = dict(zip(spec.leaf_names, dims))
    assert muon[attention + "['out']['kernel']"].reduction_axis == (0, 1)
    assert muon[attention + "['out']['kernel']"].output_axis == (2,)
    assert muon[attention + "['query']['bias']"] is None
    # Width axes on one side of the fan-in only: a first layer over fixed-size features is an input, a readout an
    # output; a leaf never contracted keeps the role its labels give, a vector where they would make a matrix.
    assert width.leaf_role((None, None, None, "c"), (3, 3, 1, 8), fan_in=(0, 1, 2)) == (width.ROLES.index("input"), 8)
    assert width.leaf_role(("h", "k", None), (4, 2, 10), fan_in=(0, 1)) == (width.ROLES.index("output"), 8)
    assert width.leaf_role(("h", "k"), (4, 2), fan_in=()) == (width.ROLES.index("vector"), 8)
    assert width.leaf_role(("h", "k"), (4, 2)) == (width.ROLES.index("hidden"), np.sqrt(8))
    assert width.matrix_axes(("h", "k", "d"), fan_in=(0, 1)) == ((0, 1), (2,))
    assert width.matrix_axes((None, None, "c1", "c2"), fan_in=(0, 1, 2)) == ((0, 1, 2), (3,))  # taps x in
    assert width.matrix_axes((None, None, None, "c2"), fan_in=(0, 1, 2)) is None  # a first conv: no width fan-in
    assert width.matrix_axes(("h", "k", "d")) == ((0,), (1, 2))

    def tied_and_normalised(p, tokens):  # an embedding looked up and contracted; a kernel weight-normalised first
        x = p["embed"][tokens]
        kernel = p["w"] / jnp.linalg.norm(p["w"], axis=0, keepdims=True)
        return jnp.tanh(x @ kernel + p["b"][None, None]) @ p["embed"].T

    tied = {"embed": jnp.ones((11, 4)), "w": jnp.ones((4, 4)), "b": jnp.ones(4)}
    inferred = spec_lib.infer(tied_and_normalised, tied, jnp.zeros((2, 3), jnp.int32))
    assert dict(zip(inferred.leaf_names, inferred.leaf_fan_in)) == {"['b']": (), "['embed']": None, "['w']": (0,)}


def test_fan_in_follows_kernels_concatenated_or_reshaped_before_the_contraction_and_is_unknown_past_other_ops():
    def rearranged(p, x):
        gates = jnp.concatenate([p["w_a"], p["w_b"]], axis=1)  # fused gates, as linen's OptimizedLSTMCell
        h = jnp.tanh(x @ gates + jnp.concatenate([p["b_a"], p["b_b"]])[None])
        merged = p["heads"].reshape(-1, p["heads"].shape[-1])  # [heads, head_dim, d] read as [heads x head_dim, d]
        running = jnp.cumsum(p["odd"], axis=0)  # a rearrangement the rules do not follow, then contracted
        return (h @ merged) @ running

    params = {"w_a": jnp.ones((3, 4)), "w_b": jnp.ones((3, 4)), "b_a": jnp.ones(4), "b_b": jnp.ones(4),
              "heads": jnp.ones((2, 4, 5)), "odd": jnp.ones((5, 5))}
    inferred = spec_lib.infer(rearranged, params, jnp.ones((2, 3)))
    assert dict(zip(inferred.leaf_names, inferred.leaf_fan_in)) == {
        "['b_a']": (), "['b_b']": (), "['heads']": (0, 1), "['odd']": None, "['w_a']": (0,), "['w_b']": (0,)}

    class Seq(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.RNN(nn.OptimizedLSTMCell(6))(x))

    model, x = Seq(), jnp.ones((2, 5, 4))
    cell_params = model.init(KEY, x)["params"]
    spec = spec_lib.infer(lambda p, x: model.apply({"params": p}, x), cell_params, x)
    cell = {name: fan_in for name, fan_in in zip(spec.leaf_names, spec.leaf_fan_in) if "Cell" in name}
    assert len(cell) == 12 and all(f == ((0,) if name.endswith("['kernel']") else ()) for name, f in cell.items())


def test_a_fused_kernel_indexed_into_its_parts_keeps_the_parts_axis_fixed_size_and_each_part_one_matrix():
    # Gemma's feed-forward: one [2, hidden, d] kernel, contracted with the stream, split by index into gate and up.
    def gated(p, x):
        h = x @ p["embed"]
        both = jnp.einsum("bd,cfd->cbf", h, p["gating"])
        h = h + (jax.nn.gelu(both[0]) * both[1]) @ p["linear"]
        return h @ p["readout"]

    shapes = {"embed": (5, 8), "gating": (2, 16, 8), "linear": (16, 8), "readout": (8, 3)}
    params = {k: jax.random.normal(jax.random.fold_in(KEY, i), v) for i, (k, v) in enumerate(shapes.items())}
    x = jax.random.normal(jax.random.key(1), (4, 5))
    spec = spec_lib.infer(gated, params, x)
    leaf = dict(zip(spec.leaf_names, zip(spec.leaf_axes, spec.leaf_unpermuted_widths, spec.leaf_fan_in)))
    labels, wide, fan_in = leaf["['gating']"]
    assert labels[0] is None and 0 not in wide and fan_in == (2,)  # gate-or-up: two positions, no width
    assert labels[1] == leaf["['linear']"][0][0] is not None  # the hidden units: one group through both parts
    views = dict(zip(spec.leaf_names, width.matrix_views(spec, [False] * spec.num_leaves)))
    assert views["['gating']"] == ((2,), (1,))  # [d, hidden] per part, the parts a batch
    role, n = width.roles(spec, [False] * spec.num_leaves)[spec.leaf_names.index("['gating']")]
    assert width.ROLES[role] == "hidden" and n == pytest.approx(np.sqrt(16 * 8))
    assert max(spec_lib.check_symmetry(gated, params, spec, x, key=KEY).values()) < 1e-4


@pytest.mark.parametrize("multiplier", [1, 2])
def test_a_depthwise_conv_keeps_its_channels_one_group_when_each_has_one_filter(multiplier):
    class ConvNeXtBlock(nnx.Module):  # a 7x7 depthwise conv, then an inverted-bottleneck MLP, in a residual
        def __init__(self, rngs, c=8):
            self.stem = nnx.Conv(3, c, (3, 3), rngs=rngs)
            self.dw = nnx.Conv(c, c * multiplier, (7, 7), feature_group_count=c, rngs=rngs)
            self.norm = nnx.LayerNorm(c * multiplier, rngs=rngs)
            self.up, self.down = nnx.Linear(c * multiplier, 4 * c, rngs=rngs), nnx.Linear(4 * c, c, rngs=rngs)
            self.head = nnx.Linear(c, 10, rngs=rngs)

        def __call__(self, x):
            x = self.stem(x)
            x = x + self.down(jax.nn.gelu(self.up(self.norm(self.dw(x)))))
            return self.head(x.mean((1, 2)))

    model, x = ConvNeXtBlock(nnx.Rngs(0)), jax.random.normal(KEY, (2, 8, 8, 3))
    spec = spec_lib.infer(model, x)
    axes = spec.axes_tree()
    stream = axes["stem"]["kernel"][3]
    if multiplier == 1:  # input, filter and output channel move together: the residual stream stays one group
        assert stream not in (None, spec_lib.UNPERMUTED_WIDTH)
        assert axes["dw"]["kernel"][3] == axes["down"]["kernel"][1] == stream
    else:  # a channel's filters move in blocks, which one label per axis cannot say
        assert stream is spec_lib.UNPERMUTED_WIDTH and axes["dw"]["kernel"][3] is spec_lib.UNPERMUTED_WIDTH
    graphdef, params_state, rest = nnx.split(model, nnx.Param, ...)

    def apply(p, inputs):
        return inference.merge_params(graphdef, params_state, p, rest)(inputs)

    changes = spec_lib.check_symmetry(apply, nnx.to_pure_dict(params_state), spec, x, key=KEY)
    assert max(changes.values()) < 1e-4


def test_a_class_token_tiled_over_the_batch_keeps_a_vits_stream_one_group():
    class ViT(nn.Module):  # patches, a class token, learned positions, attention and MLP blocks, a head on the token
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(16, (4, 4), strides=(4, 4), name="patch")(x)
            b, h, w, c = x.shape
            x = x.reshape(b, h * w, c)
            token = self.param("cls", nn.initializers.normal(0.02), (1, 1, c))
            x = jnp.concatenate([jnp.tile(token, (b, 1, 1)), x], axis=1)
            x = x + self.param("pos", nn.initializers.normal(0.02), (1, h * w + 1, c))
            y = nn.LayerNorm()(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=2)(y, y)
            x = x + nn.Dense(c)(nn.gelu(nn.Dense(4 * c)(nn.LayerNorm()(x))))
            return nn.Dense(10, name="head")(nn.LayerNorm()(x)[:, 0])

    model, x = ViT(), jax.random.normal(KEY, (2, 8, 8, 3))
    params = model.init(KEY, x)["params"]

    def apply(p, inputs):
        return model.apply({"params": p}, inputs)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tile is an operation it knows
        spec = spec_lib.infer(apply, params, x)
    axes = spec.axes_tree()
    stream = axes["patch"]["kernel"][3]
    assert stream not in (None, spec_lib.UNPERMUTED_WIDTH)
    assert axes["cls"][2] == axes["pos"][2] == axes["head"]["kernel"][0] == stream
    role = dict(zip(spec.leaf_names, width.roles(spec, [False] * spec.num_leaves)))
    assert width.ROLES[role["['MultiHeadDotProductAttention_0']['query']['kernel']"][0]] == "hidden"
    assert max(spec_lib.check_symmetry(apply, params, spec, x, key=KEY).values()) < 1e-4
    # A tensor tiled along an axis longer than one is laid out again: no group crosses it.
    tiled = spec_lib.infer(lambda p, inputs: inputs @ jnp.tile(p["w"], (1, 2)), {"w": jnp.ones((3, 4))},
                           jnp.ones((2, 3)))
    assert tiled.leaf_axes[0][1] is None


ALONG_ONE_AXIS = {
    "sort": lambda p, x: jnp.sort(x @ p["w"], axis=0) @ p["v"],  # each hidden unit's column sorted alone
    "top_k": lambda p, x: jax.lax.top_k((x @ p["w"]).T, 2)[0].T @ p["v"],  # each unit's two largest rows
    "dynamic_update_slice": lambda p, x: jax.lax.dynamic_update_slice(jnp.zeros((8, 8)), x @ p["w"], (2, 0)) @ p["v"],
}


@pytest.mark.parametrize("name", sorted(ALONG_ONE_AXIS))
def test_ops_that_reorder_select_or_write_along_one_axis_keep_the_others_groups(name):
    fn = ALONG_ONE_AXIS[name]
    params = {"w": jax.random.normal(KEY, (6, 8)), "v": jax.random.normal(jax.random.key(1), (8, 5))}
    x = jax.random.normal(jax.random.key(2), (4, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an operation it knows
        spec = spec_lib.infer(fn, params, x)
    hidden = spec.axes_tree()["w"][1]
    assert hidden not in (None, spec_lib.UNPERMUTED_WIDTH) and spec.axes_tree()["v"][0] == hidden
    assert max(spec_lib.check_symmetry(fn, params, spec, x, key=KEY).values()) < 1e-4


def test_experts_picked_per_token_are_matrices_read_by_their_contraction_while_an_embedding_is_looked_up():
    def mixture(p, x):  # a top-2 mixture of experts: each token's experts' weights gathered, then contracted
        h = x @ p["embed"]
        gates, chosen = jax.lax.top_k(jax.nn.softmax(h @ p["router"]), 2)
        y = jax.nn.gelu(jnp.einsum("td,tkdf->tkf", h, p["w_in"][chosen]))
        y = jnp.einsum("tkf,tkfd->tkd", y, p["w_out"][chosen])
        h = h + jnp.einsum("tk,tkd->td", gates, y)
        return h @ p["head"] + p["table"][jnp.argmax(x, axis=-1)] @ p["head"]

    shapes = {"embed": (3, 8), "router": (8, 4), "w_in": (4, 8, 16), "w_out": (4, 16, 8), "head": (8, 2),
              "table": (3, 8)}
    params = {k: jax.random.normal(jax.random.fold_in(KEY, i), v) for i, (k, v) in enumerate(shapes.items())}
    x = jax.random.normal(jax.random.key(1), (5, 3))
    spec = spec_lib.infer(mixture, params, x)
    fan_in = dict(zip(spec.leaf_names, spec.leaf_fan_in))
    assert fan_in["['w_in']"] == (1,) and fan_in["['w_out']"] == (1,)  # [experts, in, out]: `in` contracted
    assert fan_in["['table']"] == ()  # a row looked up, never contracted
    views = dict(zip(spec.leaf_names, width.matrix_views(spec, [False] * spec.num_leaves)))
    assert views["['w_in']"] == ((1,), (2,)) and views["['w_out']"] == ((1,), (2,))  # one matrix per expert
    assert max(spec_lib.check_symmetry(mixture, params, spec, x, key=KEY).values()) < 1e-4


def test_an_nnx_scan_over_stacked_layers_gives_the_views_and_roles_its_logical_names_give():
    model = flax_examples.ScanGPT(nnx.Rngs(0))
    tokens = jnp.arange(10).reshape(2, 5) % 23
    inferred, named = spec_lib.infer(model, tokens), spec_lib.from_flax(model)
    assert inferred.leaf_names == named.leaf_names and inferred.fixed == (LAYERS,)
    stacked = width.stacked_by_labels(inferred)
    assert stacked == width.stacked_by_labels(named)
    assert width.matrix_views(inferred, stacked) == width.matrix_views(named, stacked)
    assert width.roles(inferred, stacked) == width.roles(named, stacked)
    assert_symmetry(flax_examples.nnx_apply(model), nnx.to_pure_dict(nnx.state(model, nnx.Param)), inferred, tokens)


def test_a_dropout_mask_drawn_in_training_mode_pins_nothing():
    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(4, 8, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)
            self.out = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(self.dropout(nnx.relu(self.hidden(x))))

    model = MLP(nnx.Rngs(0))
    x = jnp.ones((3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the random draw is known
        training = spec_lib.infer(model, x)
    model.eval()
    # i.i.d. noise is as likely under any permutation: the hidden units stay one group, as without dropout.
    assert training.leaf_axes == spec_lib.infer(model, x).leaf_axes
    assert training.axes_tree()["hidden"]["kernel"][1] is not None
