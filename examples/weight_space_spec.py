"""Write a weight-space spec for your own network (a flax model or a plain pytree) and inspect its basis.

    python examples/weight_space_spec.py
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import unf
from unf import spec as spec_lib


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(3)(x)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="accepted for symmetry with the other examples")
    parser.parse_args(argv)

    # A flax network: the helper reads flax's {"params": {"Dense_0": {"kernel", "bias"}, ...}} layout.
    variables = MLP().init(jax.random.key(0), jnp.zeros((1, 4)))
    flax_spec = spec_lib.mlp(variables)
    print("flax MLP labels:", flax_spec.axes_tree())

    # A plain pytree: say which permutation group acts on each axis (None = not permuted).
    params = {"w1": jnp.ones((4, 8)), "b1": jnp.ones((8,)), "w2": jnp.ones((8, 2))}
    labels = {"w1": (None, "hidden"), "b1": ("hidden",), "w2": ("hidden", None)}
    plain_spec = spec_lib.from_labels(params, labels)
    unf.describe(plain_spec)  # how many equivariant basis terms link each pair of leaves

    # Every basis term is inspectable: what it reads and where it writes (here from w1 into w2).
    w1_to_w2 = unf.basis.terms(labels["w2"], labels["w1"])
    for term in w1_to_w2:
        print("  w2 <- w1:", term.formula())

    # An equivariant layer over the spec: permuting its input permutes its output the same way.
    layer = unf.EquivariantLinear(plain_spec, c_in=1, c_out=2)
    weights = layer.init(jax.random.key(1))
    x = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape + (1,)), params)
    perm = plain_spec.sample(jax.random.key(3))
    moved_then_layer = layer.apply(weights, plain_spec.apply(perm, x))
    layer_then_moved = plain_spec.apply(perm, layer.apply(weights, x))
    error = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(moved_then_layer), jax.tree.leaves(layer_then_moved)))
    print(f"{layer.num_terms} basis terms; equivariance error {error:.2e}")
    return {"flax_spec": flax_spec, "plain_spec": plain_spec, "equivariance_error": error,
            "num_terms": layer.num_terms, "terms_w1_w2": len(w1_to_w2)}


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
