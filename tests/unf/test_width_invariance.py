"""The learned Adam rule relates to Adam the same way at every width and depth: what makes it transfer past the
widths it was meta-trained on.

With fixed random (non-zero) meta-params and gradients of one distribution at every size, the per-tensor RMS of the
update relative to muP-scaled Adam's and its cosine with Adam's update each stay within 10% from d_model 16 to 256,
and from 1 to 8 layers.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hetnet import TransformerConfig, TransformerLM
from unf import lopt, spec as spec_lib
from unf.lopt import width

TOLERANCE = 0.10


def random_meta(learned, key, scale=0.1):
    """The muP starting point with a random (non-zero) output layer: the learned correction contributes at every
    position. The schedule and the decoupled weight decay stay as they start (decay acts on the weight, whose scale
    falls with the width by construction of the model's init, not of the rule)."""
    meta = lopt.mup_start(learned.init_meta_params(jax.random.key(0)))
    leaves, treedef = jax.tree.flatten(meta["output"])
    keys = jax.random.split(key, len(leaves))
    out = treedef.unflatten([x + scale * jax.random.normal(k, jnp.shape(x)) for k, x in zip(keys, leaves)])
    return {**meta, "output": out}


def model_and_spec(d_model, layers):
    model = TransformerLM(TransformerConfig(vocab_size=64, d_model=d_model, num_heads=4, num_layers=layers, max_len=8))
    params = model.init(jax.random.key(0))
    return params, spec_lib.from_hetnet(params, model.axes, io_as_groups=True)


def relation_to_adam(learned, meta, params, spec, steps=3, draws=4):
    """Returns ``{leaf: (rms(update) / rms(muP-scaled Adam update), cosine(update, Adam update))}`` pooled over
    layers and ``draws`` independent streams of standard-normal gradients (enough elements that a 16-wide vector's
    statistics are not sampling noise)."""
    opt = learned.opt_fn(meta, total_steps=100)
    adam = optax.adam(1e-3)

    leaves, treedef = jax.tree.flatten(params)

    def one(key):
        def step(carry, i):
            state, adam_state = carry
            keys = jax.random.split(jax.random.fold_in(key, i), len(leaves))
            grads = treedef.unflatten([jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])
            ours, state = opt.update(grads, state, params)
            theirs, adam_state = adam.update(grads, adam_state, params)
            return (state, adam_state), (ours, theirs)

        # Scanned, so the rule compiles once, not once per step.
        _, last = jax.lax.scan(step, (opt.init(params), adam.init(params)), jnp.arange(steps))
        return jax.tree.map(lambda x: x[-1], last)

    ours, theirs = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(10), draws))
    stacked = [name.startswith("['blocks']") for name in spec.leaf_names]
    factors = [np.exp(-float(meta["width_exponent"][r]) * np.log(n / width.REFERENCE_WIDTH))
               for r, n in width.roles(spec, stacked)]
    out = {}
    for name, a, b, f in zip(spec.leaf_names, jax.tree.leaves(ours), jax.tree.leaves(theirs), factors):
        a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
        out[name] = (np.sqrt(np.mean(a**2)) / (f * np.sqrt(np.mean(b**2))), a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return out


@pytest.fixture(scope="module")
def learned():
    _, spec = model_and_spec(16, 1)
    return lopt.EquivariantAdam(spec, layer_key="blocks")


def assert_close(small, large, what):
    for name in small:
        for k, quantity in enumerate(("RMS relative to muP-scaled Adam", "cosine with Adam")):
            s, l = small[name][k], large[name][k]
            assert abs(l - s) <= TOLERANCE * abs(s), f"{what}: {quantity} of {name} moves from {s:.3f} to {l:.3f}"


def test_the_update_relates_to_adam_alike_from_d16_to_d256(learned):
    meta = random_meta(learned, jax.random.key(1))
    small = relation_to_adam(learned, meta, *model_and_spec(16, 1))
    large = relation_to_adam(learned, meta, *model_and_spec(256, 1))
    assert_close(small, large, "d16 -> d256")


def test_the_update_relates_to_adam_alike_from_1_to_8_layers(learned):
    meta = random_meta(learned, jax.random.key(1))
    shallow = relation_to_adam(learned, meta, *model_and_spec(32, 1))
    deep = relation_to_adam(learned, meta, *model_and_spec(32, 8))
    assert_close(shallow, deep, "1 -> 8 layers")


def test_roles_follow_the_labels():
    _, spec = model_and_spec(32, 2)
    stacked = [name.startswith("['blocks']") for name in spec.leaf_names]
    roles = {name: (width.ROLES[r], n) for name, (r, n) in zip(spec.leaf_names, width.roles(spec, stacked))}
    assert roles["['tokens']"] == ("input", 32.0)
    assert roles["['positions']"] == ("input", 32.0)
    assert roles["['unembed']"] == ("output", 32.0)
    assert roles["['final_norm']['scale']"] == ("vector", 32.0)
    assert roles["['blocks']['ffn_norm']['scale']"] == ("vector", 32.0)
    assert roles["['blocks']['ffn']['w_in']"] == ("hidden", pytest.approx(np.sqrt(32 * 128)))
    assert roles["['blocks']['attn']['out']"] == ("hidden", pytest.approx(32.0))
