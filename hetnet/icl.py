"""In-context linear regression with shallow linear transformers (Ahn et al., ICLR 2024).

Tokens ``Z_0 [n + 1, d + 1]`` hold rows ``[x_i, y_i]`` for ``i < n`` and a last row ``[x_query, 0]``. Each layer adds,
summed over heads, ``(1/n) (Z Qbar Z^T) M (Z Pbar^T)`` with ``Pbar = [[P, 0], [0, 1]]``, ``Qbar = [[Q, 0], [0, 0]]``
(``P, Q: [d, d]``) and ``M = diag(1, ..., 1, 0)`` keeping the query out of the sources; no softmax, norm or MLP.
The prediction is ``-Z_L[n, d]``. Params: ``{"layers": [{"P": [heads, d, d], "Q": [heads, d, d]}, ...]}``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from hetnet import axes as axes_lib
from hetnet import validation

COVARIATES = ("gaussian", "sphere", "heavy")


@dataclasses.dataclass(frozen=True)
class ICLConfig:
    """layers L, dimension d, context length n, heads per layer, init std (the paper's defaults)."""

    layers: int = 3
    dim: int = 5
    context: int = 20
    heads: int = 1
    init_std: float = 0.05

    def __post_init__(self):
        for name in ("layers", "dim", "context", "heads"):
            object.__setattr__(self, name, validation.positive_int(name, getattr(self, name)))
        std = self.init_std
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 < std < math.inf:
            raise ValueError(f"init_std must be a finite number > 0 (the std of every P, Q entry at init), got "
                             f"{std!r}.")


def init(key: jax.Array, cfg: ICLConfig):
    """Returns ``(params, axes)``; every P, Q entry ~ N(0, init_std^2); heads are a permutation group per layer."""
    params, axes = {"layers": []}, {"layers": []}
    for i, k in enumerate(jax.random.split(key, cfg.layers)):
        kp, kq = jax.random.split(k)
        shape = (cfg.heads, cfg.dim, cfg.dim)
        params["layers"].append({"P": cfg.init_std * jax.random.normal(kp, shape),
                                 "Q": cfg.init_std * jax.random.normal(kq, shape)})
        axes["layers"].append(axes_lib.scope({"P": ("heads", None, None), "Q": ("heads", None, None)}, f"layers/{i}"))
    return params, axes


def _bar(m: jax.Array, corner: float) -> jax.Array:
    """Returns ``[[m, 0], [0, corner]]`` for every head. m: [heads, d, d] -> [heads, d + 1, d + 1]"""
    h, d, _ = m.shape
    out = jnp.zeros((h, d + 1, d + 1), m.dtype).at[:, :d, :d].set(m)
    return out.at[:, d, d].set(corner)


def apply(params, z: jax.Array, cfg: ICLConfig) -> jax.Array:
    """Returns the final tokens ``Z_L``. z: [batch, n + 1, d + 1] -> [batch, n + 1, d + 1]"""
    n = z.shape[1] - 1
    if z.shape[2] != cfg.dim + 1:
        raise ValueError(f"z must have shape [batch, n + 1, d + 1 = {cfg.dim + 1}], got {tuple(z.shape)}.")
    source = jnp.ones((n + 1,), z.dtype).at[n].set(0.0)
    for layer in params["layers"]:
        pbar, qbar = _bar(layer["P"], 1.0), _bar(layer["Q"], 0.0)
        scores = jnp.einsum("bia,hac,bjc->bhij", z, qbar, z) * source[None, None, None, :]
        values = jnp.einsum("bja,hca->bhjc", z, pbar)
        z = z + jnp.einsum("bhij,bhjc->bic", scores, values) / n
    return z


def predict(params, z: jax.Array, cfg: ICLConfig) -> jax.Array:
    """Returns the query predictions ``-Z_L[:, n, d]``: [batch]."""
    return -apply(params, z, cfg)[:, -1, -1]


def sample_covariates(key: jax.Array, shape: tuple[int, ...], kind: str) -> jax.Array:
    """Returns covariates ``[*shape, d]``: standard Gaussian, uniform on the unit sphere, or heavy-tailed
    ``u * sqrt(g)`` with ``u`` uniform on the sphere and ``g ~ Gamma(shape 0.1, scale 10)``."""
    if kind not in COVARIATES:
        raise ValueError(f"covariates must be one of {COVARIATES}, got {kind!r}.")
    k1, k2 = jax.random.split(key)
    g = jax.random.normal(k1, shape)
    if kind == "gaussian":
        return g
    u = g / jnp.linalg.norm(g, axis=-1, keepdims=True)
    if kind == "sphere":
        return u
    return u * jnp.sqrt(10.0 * jax.random.gamma(k2, 0.1, shape[:-1] + (1,)))


def sample_batch(key: jax.Array, cfg: ICLConfig, batch: int, covariates: str = "gaussian") -> dict:
    """Returns ``{"z": [batch, n + 1, d + 1], "y": [batch]}``: a fresh ``w ~ N(0, I)`` per sequence,
    ``y_i = w . x_i``, and the query's label ``y`` held out (its slot in ``z`` is 0)."""
    kw, kx = jax.random.split(key)
    n, d = cfg.context, cfg.dim
    w = jax.random.normal(kw, (batch, d))
    x = sample_covariates(kx, (batch, n + 1, d), covariates)
    y = jnp.einsum("bnd,bd->bn", x, w)
    z = jnp.concatenate([x, y.at[:, n].set(0.0)[..., None]], axis=-1)
    return {"z": z, "y": y[:, n]}


def loss(params, batch: dict, cfg: ICLConfig) -> jax.Array:
    """Returns the mean squared error of the query predictions."""
    return jnp.mean(jnp.square(predict(params, batch["z"], cfg) - batch["y"]))
