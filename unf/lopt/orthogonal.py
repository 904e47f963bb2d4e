"""Orthogonalised update directions (Muon's): a hidden tensor's momentum, seen as a matrix by its labels, replaced by
the nearest semi-orthogonal matrix, computed by a few Newton-Schulz iterations."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# The quintic iteration of Muon (Jordan et al. 2024): it pushes every singular value into roughly [0.7, 1.2] in five
# steps, which is all an update direction needs, far faster than an exact polar decomposition.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def newton_schulz(x: jax.Array, steps: int = NS_STEPS) -> jax.Array:
    """Returns an approximately semi-orthogonal matrix with ``x``'s singular vectors. x: [rows, cols]."""
    a, b, c = NS_COEFFICIENTS
    wide = x.shape[0] <= x.shape[1]
    y = x if wide else x.T
    y = y / (jnp.linalg.norm(y) + 1e-7)
    for _ in range(steps):
        gram = y @ y.T
        y = a * y + (b * gram + c * gram @ gram) @ y
    return y if wide else y.T


def newton_schulz_flops(rows: int, cols: int, steps: int = NS_STEPS) -> int:
    """Returns the FLOPs (two per multiply-add) of :func:`newton_schulz` on one ``[rows, cols]`` matrix: each step
    forms the Gram matrix on the short side ``m`` (``2 m^2 n``), squares it (``2 m^3``) and applies it (``2 m^2 n``)."""
    m, n = min(rows, cols), max(rows, cols)
    return steps * (4 * m * m * n + 2 * m**3)


def orthogonalize_flops(shape: tuple[int, ...], axes: tuple[tuple[int, ...], tuple[int, ...]]) -> int:
    """Returns the FLOPs of :func:`orthogonalize` on a tensor of ``shape``: one :func:`newton_schulz_flops` per
    matrix, the axes in neither of ``axes`` counting the matrices."""
    inputs, outputs = axes
    rows = math.prod(shape[i] for i in inputs)
    cols = math.prod(shape[i] for i in outputs)
    return math.prod(shape) // (rows * cols) * newton_schulz_flops(rows, cols)


def orthogonalize(x: jax.Array, axes: tuple[tuple[int, ...], tuple[int, ...]]) -> jax.Array:
    """Returns ``x`` with every matrix ``[input axes, output axes]`` orthogonalised (the other axes are batch).

    x: any shape; axes: ``(input axes, output axes)`` as :func:`unf.lopt.width.matrix_axes` gives them.
    """
    inputs, outputs = axes
    batch = tuple(i for i in range(x.ndim) if i not in inputs + outputs)
    order = batch + inputs + outputs
    moved = jnp.transpose(x, order)
    rows = math.prod(x.shape[i] for i in inputs)
    cols = math.prod(x.shape[i] for i in outputs)
    flat = moved.reshape(-1, rows, cols)
    done = jax.vmap(newton_schulz)(flat.astype(jnp.float32)).reshape(moved.shape)
    return jnp.transpose(done, np.argsort(order)).astype(x.dtype)
