"""Hyper-SET (Hu, Zou and Xu, 2025): one layer of gradient steps on a hyperspherical energy, repeated T times.

Tokens ``x_i`` (rows of ``X``) meet ``H`` subspace bases ``W_h: [d_model, p]`` and a dictionary ``D: [d_model, M]``.
Projections are put on spheres by RMSNorm without a learned scale: ``z_i^h = RMSNorm(W_h^T x_i)`` has norm
``sqrt(p)`` and ``n_i = RMSNorm(D^T x_i)`` norm ``sqrt(M)``. The energies, with ``beta = 1 / sqrt(p)``:

    E_ATTN = sum_h (1/beta) sum_i logsumexp_j(beta z_i^h . z_j^h)
    E_FF   = -1/2 sum_i sum_m ReLU(n_im)^2

Their negative gradients with respect to the sphere points, lifted back through ``W_h`` and ``D``, are the layer:

    attention step:     x_k <- x_k - alpha ⊙ sum_h W_h (sum_i C^h_ik z_i^h + sum_i R^h_ik z_i^h)
    feed-forward step:  x_k <- x_k + gamma ⊙ D ReLU(n_k)

where ``A^h = beta Z^h Z^h^T``, ``C^h`` is its softmax over senders ``i`` for each reader ``k`` (ordinary attention,
queries = keys = values through ``W_h``) and ``R^h`` its softmax over each sender's receivers (the transposed
term). The step sizes ``alpha, gamma: [d_model]`` per token and channel come, as in the paper's code, from

    c_t = MLP(sinusoid(t)),    (alpha, gamma) = Linear(GELU(c_t + x_0))

where ``x_0`` is the layer's input before the first iteration; the output layer starts at zero, so every iteration
starts as the identity. (The paper's code also zeroes both layers of the time MLP, which leaves their gradients
zero forever, so ``c_t`` stays a constant; here its hidden layer starts random so the steps can depend on ``t``.) One set of weights serves all ``T = num_layers`` iterations, so running more iterations at inference is
``dataclasses.replace(cfg, num_layers=...)`` on the same params.

Causal variant (not in the paper): a token may only receive from tokens at or before it. Masked that way, the
reader-normalised term is causal attention, but the sender-normalised term would need later tokens for its
normaliser, so the causal step uses the reader-normalised causal softmax for both terms.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from hetnet.attention.masked_softmax import masked_softmax
from hetnet.config import TransformerConfig

EPS = 1e-6
AXES = {
    "subspaces": ("embed", "hs_heads", "hs_dim"),
    "dictionary": ("embed", "hs_atoms"),
    "step_time": (None, "hs_step"),
    "step_time_bias": ("hs_step",),
    "step_time_out": ("hs_step", "embed"),
    "step_time_out_bias": ("embed",),
    "step_out": ("embed", None, "embed"),
    "step_out_bias": (None, "embed"),
}


def sphere(u: jax.Array) -> jax.Array:
    """Returns ``u`` scaled onto the sphere of radius ``sqrt(u.shape[-1])`` (RMSNorm with no learned scale)."""
    return u * jax.lax.rsqrt(jnp.mean(jnp.square(u), axis=-1, keepdims=True) + EPS)


def sizes(cfg: TransformerConfig) -> tuple[int, int, int]:
    """Returns ``(heads, subspace_dim, dictionary_size)`` of a Hyper-SET config."""
    attn = cfg.attention_config
    return attn.num_heads, attn.dim_per_head, cfg.ffn_config.d_ff


def time_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Returns the sinusoidal embedding of iteration ``t`` (scalar) -> [dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(1000.0) * jnp.arange(half) / max(half, 1))
    angles = jnp.asarray(t, jnp.float32) * freqs
    emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])
    return jnp.pad(emb, (0, dim - 2 * half))


def step_sizes(params, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns ``(alpha, gamma)``, each [batch, seq, d_model], for iteration ``t`` of a layer whose input before
    the first iteration was ``x0: [batch, seq, d_model]``."""
    dtype = x0.dtype
    temb = time_embedding(t, params["step_time"].shape[0]).astype(dtype)
    hidden = jax.nn.gelu(temb @ params["step_time"].astype(dtype) + params["step_time_bias"].astype(dtype))
    c = hidden @ params["step_time_out"].astype(dtype) + params["step_time_out_bias"].astype(dtype)
    out = jnp.einsum("bse,ekd->bskd", jax.nn.gelu(x0 + c[None, None]), params["step_out"].astype(dtype))
    out = out + params["step_out_bias"].astype(dtype)[None, None]
    return out[:, :, 0], out[:, :, 1]


def _allowed(x: jax.Array, causal: bool, padding_mask: jax.Array | None) -> jax.Array:
    """Returns [batch, 1, seq_reader, seq_sender] bool: which sender each reader may read."""
    n = x.shape[1]
    allowed = jnp.ones((1, 1, n, n), bool)
    if causal:
        allowed = allowed & jnp.tril(jnp.ones((n, n), bool))[None, None]
    if padding_mask is not None:
        allowed = allowed & padding_mask.astype(bool)[:, None, None, :]
    return allowed


def head_points(subspaces: jax.Array, x: jax.Array, normalize: bool = True) -> jax.Array:
    """Returns ``z^h``: [batch, heads, seq, p] from x: [batch, seq, d_model] and subspaces: [d_model, heads, p]."""
    z = jnp.einsum("bsd,dhp->bhsp", x, subspaces.astype(x.dtype))
    return sphere(z) if normalize else z


def attention_update(params, x: jax.Array, causal: bool, padding_mask: jax.Array | None = None) -> jax.Array:
    """Returns the attention step's direction ``sum_h W_h (C + R) z`` (to be subtracted, scaled by alpha).

    x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None -> [batch, seq, d_model]
    """
    w = params["subspaces"]
    z = head_points(w, x)
    beta = 1.0 / math.sqrt(z.shape[-1])
    scores = beta * jnp.einsum("bhip,bhjp->bhij", z, z)  # symmetric: [batch, heads, reader, sender]
    allowed = _allowed(x, causal, padding_mask)
    read = masked_softmax(scores, allowed)  # reader-normalised
    if causal:
        moved = 2.0 * jnp.einsum("bhki,bhip->bhkp", read, z)
    else:
        # The scores are symmetric, so row i of the same softmax is sender i's distribution over its receivers.
        sent = read if padding_mask is None else read * padding_mask.astype(read.dtype)[:, None, :, None]
        moved = jnp.einsum("bhki,bhip->bhkp", read, z) + jnp.einsum("bhik,bhip->bhkp", sent, z)
    return jnp.einsum("bhkp,dhp->bkd", moved, w.astype(x.dtype))


def feedforward_update(params, x: jax.Array) -> jax.Array:
    """Returns the feed-forward step's direction ``D ReLU(RMSNorm(D^T x))`` (to be added, scaled by gamma).

    x: [batch, seq, d_model] -> [batch, seq, d_model]
    """
    dictionary = params["dictionary"].astype(x.dtype)
    return jax.nn.relu(sphere(x @ dictionary)) @ dictionary.T


def attention_energy(params, x: jax.Array, normalize: bool = True, padding_mask: jax.Array | None = None) -> jax.Array:
    """Returns ``E_ATTN`` per example, [batch] (non-causal, over real tokens)."""
    z = head_points(params["subspaces"], x, normalize)
    beta = 1.0 / math.sqrt(z.shape[-1])
    scores = beta * jnp.einsum("bhip,bhjp->bhij", z, z)
    real = jnp.ones(x.shape[:2], bool) if padding_mask is None else padding_mask.astype(bool)
    lse = jax.nn.logsumexp(jnp.where(real[:, None, None, :], scores, -jnp.inf), axis=-1)
    return jnp.sum(jnp.where(real[:, None, :], lse, 0.0), axis=(1, 2)) / beta


def feedforward_energy(params, x: jax.Array, normalize: bool = True, padding_mask: jax.Array | None = None) -> jax.Array:
    """Returns ``E_FF`` per example, [batch]."""
    u = x @ params["dictionary"].astype(x.dtype)
    u = sphere(u) if normalize else u
    per_token = -0.5 * jnp.sum(jnp.square(jax.nn.relu(u)), axis=-1)
    if padding_mask is not None:
        per_token = per_token * padding_mask.astype(per_token.dtype)
    return jnp.sum(per_token, axis=-1)


@dataclasses.dataclass(frozen=True)
class HyperSET:
    """The shared Hyper-SET layer bound to ``cfg``, iterated ``cfg.num_layers`` times.

    Params: subspaces [d_model, heads, p]; dictionary [d_model, M]; the step-size network: step_time
    [d_model, d_model] and step_time_bias [d_model] (time MLP hidden layer, on a d_model-wide sinusoid),
    step_time_out [d_model, d_model] and step_time_out_bias [d_model], step_out [d_model, 2, d_model] and
    step_out_bias [2, d_model] (both zero, so every step starts at zero).
    """

    cfg: TransformerConfig

    def init(self, key: jax.Array) -> dict:
        """Returns the layer's params (arrays only)."""
        heads, p, atoms = sizes(self.cfg)
        d = self.cfg.d_model
        k_w, k_d, k_t, k_c = jax.random.split(key, 4)
        normal = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
        return {
            "subspaces": normal(k_w, (d, heads, p), jnp.float32),
            "dictionary": jax.nn.initializers.lecun_normal()(k_d, (d, atoms), jnp.float32),
            "step_time": jax.nn.initializers.lecun_normal()(k_t, (d, d), jnp.float32),
            "step_time_bias": jnp.zeros((d,), jnp.float32),
            "step_time_out": jax.nn.initializers.lecun_normal()(k_c, (d, d), jnp.float32),
            "step_time_out_bias": jnp.zeros((d,), jnp.float32),
            "step_out": jnp.zeros((d, 2, d), jnp.float32),
            "step_out_bias": jnp.zeros((2, d), jnp.float32),
        }

    @property
    def axes(self) -> dict:
        return dict(AXES)

    def apply(self, params, x: jax.Array, *, padding_mask: jax.Array | None = None) -> jax.Array:
        """Returns ``x`` after ``cfg.num_layers`` iterations.

        x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None -> [batch, seq, d_model]
        """
        return self.iterate(params, x, padding_mask=padding_mask)[0]

    def iterate(self, params, x: jax.Array, *, padding_mask=None, record_energies: bool = False):
        """Returns ``(x, energies)`` after ``cfg.num_layers`` iterations of the attention step then the
        feed-forward step.

        x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None. ``energies`` is None, or with
        ``record_energies`` a dict of ``attention`` and ``feedforward``: [iterations + 1, batch], before each
        iteration and after the last.
        """
        causal = self.cfg.causal
        x0 = x

        def one(x, t):
            alpha, gamma = step_sizes(params, x0, t)
            x = x - alpha * attention_update(params, x, causal, padding_mask)
            x = x + gamma * feedforward_update(params, x)
            return x, (energies(x) if record_energies else None)

        def energies(x):
            return {"attention": attention_energy(params, x, padding_mask=padding_mask),
                    "feedforward": feedforward_energy(params, x, padding_mask=padding_mask)}

        start = energies(x) if record_energies else None
        x, trace = jax.lax.scan(one, x, jnp.arange(self.cfg.num_layers))
        if not record_energies:
            return x, None
        return x, jax.tree.map(lambda s, tr: jnp.concatenate([s[None], tr]), start, trace)
