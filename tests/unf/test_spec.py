"""Spec helpers are sound: permuting a real network's params by any sampled group element keeps its function."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unf import spec as spec_lib


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for width in (6, 5):
            x = jax.nn.relu(nn.Dense(width)(x))
        return nn.Dense(3)(x)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(nn.Conv(4, (3, 3))(x))
        x = jax.nn.relu(nn.Conv(5, (3, 3))(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(3)(x)


def assert_same_function(apply, params, spec, x, seeds=3):
    want = apply(params)
    for seed in range(seeds):
        perms = spec.sample(jax.random.key(seed))
        np.testing.assert_allclose(apply(spec.apply(perms, params)), want, rtol=1e-4, atol=1e-5)


def test_mlp_spec_of_flax_dense_stack():
    model, x = MLP(), jax.random.normal(jax.random.key(0), (4, 7))
    variables = model.init(jax.random.key(1), x)
    spec = spec_lib.mlp(variables)
    assert dict(spec.sizes) == {0: 6, 1: 5}
    assert_same_function(lambda v: model.apply(v, x), variables, spec, x)


def test_mlp_spec_of_plain_list():
    params = [{"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}, {"w": jnp.ones((4, 2))}]
    spec = spec_lib.mlp(params)
    assert spec.leaf_axes == ((0,), (None, 0), (0, None))


def test_cnn_spec_of_flax_convnet():
    model, x = CNN(), jax.random.normal(jax.random.key(0), (2, 6, 6, 2))
    variables = model.init(jax.random.key(1), x)
    spec = spec_lib.cnn(variables)
    named = dict(zip(spec.leaf_names, spec.leaf_axes))
    assert named["['params']['Conv_1']['kernel']"] == (None, None, 0, 1)
    assert named["['params']['Dense_0']['kernel']"] == (1, None)
    assert_same_function(lambda v: model.apply(v, x), variables, spec, x)


def test_feedforward_specs_record_that_a_kernel_contracts_every_axis_but_its_last():
    model, x = CNN(), jnp.ones((2, 6, 6, 2))
    variables = model.init(jax.random.key(1), x)
    for spec in (spec_lib.cnn(variables), spec_lib.cnn(variables["params"])):
        fan_in = {name.removeprefix("['params']"): f for name, f in zip(spec.leaf_names, spec.fan_in)}
        assert fan_in == {"['Conv_0']['bias']": (), "['Conv_0']['kernel']": (0, 1, 2),
                          "['Conv_1']['bias']": (), "['Conv_1']['kernel']": (0, 1, 2),
                          "['Dense_0']['bias']": (), "['Dense_0']['kernel']": (0,)}
    cell = nn.LSTMCell(5)
    cell_vars = cell.init(jax.random.key(2), cell.initialize_carry(jax.random.key(3), (2, 3)), jnp.ones((2, 3)))
    spec = spec_lib.rnn(cell_vars)
    assert {f for f, shape in zip(spec.fan_in, spec.leaf_shapes) if len(shape) == 2} == {(0,)}
    assert {f for f, shape in zip(spec.fan_in, spec.leaf_shapes) if len(shape) == 1} == {()}


@pytest.mark.parametrize("cell_cls", [nn.LSTMCell, nn.GRUCell, nn.SimpleCell, nn.OptimizedLSTMCell])
def test_rnn_spec_of_flax_cells(cell_cls):
    cell, hidden = cell_cls(5), 5
    xs = jax.random.normal(jax.random.key(0), (2, 4, 3))
    carry = cell.initialize_carry(jax.random.key(1), xs[:, 0].shape)
    variables = cell.init(jax.random.key(2), carry, xs[:, 0])
    spec = spec_lib.rnn(variables)
    assert dict(spec.sizes) == {"hidden": hidden}

    def run(v):
        c = carry
        outs = []
        for t in range(xs.shape[1]):
            c, y = cell.apply(v, c, xs[:, t])
            outs.append(y)
        return jnp.stack(outs, axis=-1)  # [batch, hidden, time]

    want = run(variables)
    for seed in range(2):
        perms = spec.sample(jax.random.key(seed))
        # The hidden units are permuted, so the outputs come out permuted along the hidden axis.
        got = run(spec.apply(perms, variables))
        np.testing.assert_allclose(got, want[:, perms["hidden"]], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell_cls", [nnx.LSTMCell, nnx.SimpleCell])
def test_rnn_spec_of_nnx_cells_given_the_cell_itself(cell_cls):
    cell = cell_cls(3, 5, rngs=nnx.Rngs(0))
    spec = spec_lib.rnn(cell)
    assert dict(spec.sizes) == {"hidden": 5}
    params = nnx.to_pure_dict(nnx.state(cell, nnx.Param))
    xs = jax.random.normal(jax.random.key(0), (2, 4, 3))

    def run(p):
        twin = cell_cls(3, 5, rngs=nnx.Rngs(0))
        nnx.update(twin, nnx.State(p))
        c = twin.initialize_carry((2, 3), rngs=nnx.Rngs(1))
        outs = []
        for t in range(xs.shape[1]):
            c, y = twin(c, xs[:, t])
            outs.append(y)
        return jnp.stack(outs, axis=-1)

    want = run(params)
    perms = spec.sample(jax.random.key(3))
    np.testing.assert_allclose(run(spec.apply(perms, params)), want[:, perms["hidden"]], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell_cls, gates", [(nnx.GRUCell, 3), (nnx.OptimizedLSTMCell, 4)])
def test_rnn_spec_refuses_gates_fused_into_one_kernel(cell_cls, gates):
    with pytest.raises(ValueError, match=rf"'dense_h'/(kernel|bias) has shape .*\({gates} gates fused"):
        spec_lib.rnn(cell_cls(3, 5, rngs=nnx.Rngs(0)))


def test_rnn_spec_of_a_model_around_the_cell_names_the_cell_to_pass():
    class Seq(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.RNN(nn.LSTMCell(5))(x))

    params = Seq().init(jax.random.key(0), jnp.ones((2, 4, 3)))["params"]
    with pytest.raises(ValueError, match=r"'LSTMCell_0'/hf is a dict \(keys \['bias', 'kernel'\]\), not an array: "
                                         r"pass the cell's own params"):
        spec_lib.rnn(params)
    assert spec_lib.rnn(params["LSTMCell_0"]).sizes == (("hidden", 5),)


def test_from_labels_errors_name_the_problem():
    params = {"a": jnp.zeros((3, 4)), "b": jnp.zeros((5,))}
    with pytest.raises(ValueError, match="structure"):
        spec_lib.from_labels(params, {"a": (0, 1)})
    with pytest.raises(ValueError, match=r"axes\['a'\] has 1 labels"):
        spec_lib.from_labels(params, {"a": (0,), "b": (1,)})
    with pytest.raises(ValueError, match=r"label 1 has size 5 at params\['b'\] but size 4 at params\['a'\]"):
        spec_lib.from_labels(params, {"a": (0, 1), "b": (1,)})


def test_apply_rejects_wrong_shapes():
    params = {"a": jnp.zeros((3, 4))}
    spec = spec_lib.from_labels(params, {"a": (0, 1)})
    with pytest.raises(ValueError, match=r"\['a'\] has shape \(4, 3\)"):
        spec.apply(spec.sample(jax.random.key(0)), {"a": jnp.zeros((4, 3))})


def test_helpers_reject_unknown_layouts():
    with pytest.raises(ValueError, match="expected 'kernel' or 'w'"):
        spec_lib.mlp([{"weight": jnp.zeros((2, 2))}])
    with pytest.raises(ValueError, match="rank 3"):
        spec_lib.mlp([{"w": jnp.zeros((2, 2, 2))}])
    with pytest.raises(TypeError, match="non-empty dict"):
        spec_lib.rnn([])
    for helper in (spec_lib.mlp, spec_lib.cnn):
        for empty in ([], {}, {"params": {}}):
            with pytest.raises(ValueError, match="params hold no layers"):
                helper(empty)


def test_unpermuted_width_axes_are_unpermuted_labels_kept_through_relabel_and_layer_view():
    import dataclasses

    params = {"blocks": {"w": np.zeros((3, 4, 6))}, "head": np.zeros((6, 2))}
    spec = spec_lib.from_labels(params, {"blocks": {"w": ("layers", spec_lib.UNPERMUTED_WIDTH, "h")},
                                         "head": ("h", None)}, fixed=("layers",))
    assert spec.leaf_axes == (("layers", None, "h"), ("h", None)) and spec.unpermuted_widths == ((1,), ())
    assert "UNPERMUTED_WIDTH" not in repr(spec.sizes)  # no group: nothing permutes that axis
    wider = spec_lib.relabel(spec, {"blocks": {"w": np.zeros((3, 8, 12))}, "head": np.zeros((12, 2))})
    assert wider.unpermuted_widths == ((1,), ()) and wider.size("h") == 12
    assert spec_lib.layer_view(spec, "blocks").unpermuted_widths == ((0,), ())
    assert spec_lib.from_labels(params, spec.axes_tree(), fixed=("layers",)) == spec
    assert spec_lib.unpermuted_as_groups(spec).unpermuted_widths == ((1,), ())
    with pytest.raises(ValueError, match=r"unpermuted_widths names axis 2 of leaf \['blocks'\]\['w'\].*labelled None"):
        dataclasses.replace(spec, unpermuted_widths=((2,), ()))
    with pytest.raises(ValueError, match="unpermuted_widths has 1 entries; the weight space has 2 leaves"):
        dataclasses.replace(spec, unpermuted_widths=((1,),))


def test_a_fan_in_is_kept_through_relabel_and_layer_view_and_refused_when_it_names_no_axis():
    import dataclasses

    params = {"blocks": {"w": np.zeros((3, 4, 6)), "b": np.zeros((3, 6))}, "head": np.zeros((6, 2))}
    spec = spec_lib.from_labels(params, {"blocks": {"w": ("layers", "d", "h"), "b": ("layers", "h")},
                                         "head": ("h", None)}, fixed=("layers",))
    assert spec.fan_in == () and spec.leaf_fan_in == (None, None, None)
    known = dataclasses.replace(spec, fan_in=((), (1,), None))  # leaves in order: b, w, head
    wider = spec_lib.relabel(known, {"blocks": {"w": np.zeros((3, 8, 12)), "b": np.zeros((3, 12))},
                                     "head": np.zeros((12, 2))})
    assert wider.fan_in == ((), (1,), None)
    assert spec_lib.relabel(known, {"head": np.zeros((6, 2))}).fan_in == ()  # the one left is not known
    assert spec_lib.layer_view(known, "blocks").fan_in == ((), (0,), None)
    with pytest.raises(ValueError, match=r"fan_in names axes \(3,\) of leaf \['blocks'\]\['w'\], which has 3"):
        dataclasses.replace(spec, fan_in=((), (3,), None))
    with pytest.raises(ValueError, match="fan_in has 1 entries; the weight space has 3 leaves"):
        dataclasses.replace(spec, fan_in=((1,),))
