"""The UNF paper's learned-optimizer rule, kept for the paper's reproduction: ``init_meta_params(key)`` and
``opt_fn(meta_params) -> optax`` (the :class:`~unf.lopt.protocol.LearnedOptimizer` contract). The default learned
optimizers are in :mod:`unf.lopt.learned_adam`.

The paper's update: momenta ``m^g <- g * m + grad`` for fixed decays and one meta-learned decay ``g0``;
``W <- W - alpha * (m^{g0} + beta * f(features))`` with ``alpha, g0, beta`` meta-learned (initialised 0.1, 0.9,
1e-3) and ``f`` a network over per-parameter features: three pointwise layers then one equivariant layer (the UNF
optimizer), or four pointwise layers (the per-parameter baseline). SGD with momentum keeps only ``alpha, g0``.
``opt_fn`` is meant to be called inside the meta-loss, so meta-params are traced and never trigger recompilation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from unf import layers
from unf.lopt import features as feats
from unf.lopt.meta_params import check_like, check_settings
from unf.lopt.protocol import OwnNetworksOnly, check_fixed_step
from unf.spec import WeightSpaceSpec

HIDDEN = 32


class LearnedOptState(NamedTuple):
    """Optimizer state: the fixed-decay momenta, the meta-learned-decay momentum and the step count."""

    momenta: tuple
    momentum: Any
    step: jax.Array


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def _scalars(alpha: float = 0.1, g0: float = 0.9, beta: float = 1e-3) -> dict:
    return {"log_alpha": jnp.log(jnp.float32(alpha)), "logit_g0": jnp.float32(_logit(g0)), "beta": jnp.float32(beta)}


def _zeros(params):
    return jax.tree.map(jnp.zeros_like, params)


def _transformation(meta_params: dict, direction_fn, use_features: bool) -> optax.GradientTransformationExtraArgs:
    def init_fn(params):
        momenta = tuple(_zeros(params) for _ in feats.MOMENTUM_DECAYS) if use_features else ()
        return LearnedOptState(momenta, _zeros(params), jnp.zeros((), jnp.int32))

    def update_fn(grads, state, params=None, **extra_args):
        del extra_args
        # Read here, not when the transformation is built: built inside one jit, it runs in another.
        alpha = jnp.exp(meta_params["log_alpha"])
        g0 = jax.nn.sigmoid(meta_params["logit_g0"])
        beta = meta_params.get("beta", 0.0)
        momentum = jax.tree.map(lambda m, g: g0 * m + g, state.momentum, grads)
        momenta = state.momenta
        if use_features:
            if params is None:
                raise ValueError("this learned optimizer needs params: call update(grads, state, params).")
            momenta = tuple(
                jax.tree.map(lambda m, g, d=d: d * m + g, ms, grads)
                for d, ms in zip(feats.MOMENTUM_DECAYS, state.momenta)
            )
            direction = direction_fn(feats.parameter_features(params, grads, momenta, state.step))
            updates = jax.tree.map(lambda m, f: -alpha * (m + beta * f), momentum, direction)
        else:
            updates = jax.tree.map(lambda m: -alpha * m, momentum)
        return updates, LearnedOptState(momenta, momentum, state.step + 1)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class SGDMomentum(OwnNetworksOnly):
    """SGD with momentum whose learning rate ``alpha`` and decay ``g0`` are meta-tuned."""

    alpha: float = 0.1
    g0: float = 0.9
    name: str = "sgdm"
    hidden: None = None
    layer_key: None = None
    uses_total_steps: ClassVar[bool] = False

    def init_meta_params(self, key: jax.Array) -> dict:
        del key
        s = _scalars(self.alpha, self.g0)
        return {"log_alpha": s["log_alpha"], "logit_g0": s["logit_g0"]}

    def opt_fn(self, meta_params: dict, *, total_steps=None,
               learning_rate=None) -> optax.GradientTransformationExtraArgs:
        """Returns the rule's transformation; it does not read the run's length (``total_steps`` is accepted for the
        common contract) and sets its own step size."""
        check_fixed_step(self.name, learning_rate)
        check_like(meta_params, jax.eval_shape(self.init_meta_params, jax.random.key(0)), self.name)
        return _transformation(meta_params, None, use_features=False)


def _mlp_init(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [layers.PointwiseLinear(a, b).init(k) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def _mlp_apply(params, x, sizes, final_activation: bool):
    for i, (p, a, b) in enumerate(zip(params, sizes[:-1], sizes[1:])):
        x = layers.PointwiseLinear(a, b).apply(p, x)
        if i < len(params) - 1 or final_activation:
            x = layers.pointwise(jax.nn.relu, x)
    return x


@dataclasses.dataclass(frozen=True)
class PerParameterMLP(OwnNetworksOnly):
    """The per-parameter ("Deep Sets") baseline: ``f`` is four pointwise layers, the same for every parameter."""

    hidden: int = HIDDEN
    name: str = "per-parameter"
    layer_key: None = None
    uses_total_steps: ClassVar[bool] = False

    def __post_init__(self):
        if isinstance(self.hidden, WeightSpaceSpec):
            raise TypeError("PerParameterMLP takes no spec: it treats every parameter alike (hidden is its first "
                            "argument, the layers' width). Use PerParameterMLP() or UNFOptimizer(spec).")
        check_settings(None, self.hidden, allow_no_spec=True)

    @property
    def sizes(self):
        return (feats.NUM_FEATURES, self.hidden, self.hidden, self.hidden, 1)

    def init_meta_params(self, key: jax.Array) -> dict:
        return {**_scalars(), "f": _mlp_init(key, self.sizes)}

    def opt_fn(self, meta_params: dict, *, total_steps=None,
               learning_rate=None) -> optax.GradientTransformationExtraArgs:
        """Returns the rule's transformation (``total_steps`` unused, as for :class:`SGDMomentum`)."""
        check_fixed_step(self.name, learning_rate)
        check_like(meta_params, jax.eval_shape(self.init_meta_params, jax.random.key(0)), self.name)

        def direction(x):
            out = _mlp_apply(meta_params["f"], x, self.sizes, final_activation=False)
            return jax.tree.map(lambda y: y[..., 0], out)

        return _transformation(meta_params, direction, use_features=True)


@dataclasses.dataclass(frozen=True)
class UNFOptimizer(OwnNetworksOnly):
    """The UNF learned optimizer for the weight space ``spec``: three pointwise layers, then one equivariant layer
    to one channel. Its meta-params fit any weight space of the same structure (widths may differ)."""

    spec: WeightSpaceSpec
    hidden: int = HIDDEN
    name: str = "unf"
    layer_key: None = None
    uses_total_steps: ClassVar[bool] = False

    def __post_init__(self):
        check_settings(self.spec, self.hidden)

    @property
    def sizes(self):
        return (feats.NUM_FEATURES, self.hidden, self.hidden, self.hidden)

    @property
    def equivariant(self) -> layers.EquivariantLinear:
        return layers.cached_equivariant(self.spec, self.hidden, 1)

    def init_meta_params(self, key: jax.Array) -> dict:
        k1, k2 = jax.random.split(key)
        return {**_scalars(), "f": _mlp_init(k1, self.sizes), "equivariant": self.equivariant.init(k2)}

    def opt_fn(self, meta_params: dict, *, total_steps=None,
               learning_rate=None) -> optax.GradientTransformationExtraArgs:
        """Returns the rule's transformation (``total_steps`` unused, as for :class:`SGDMomentum`)."""
        check_fixed_step(self.name, learning_rate)
        layer = self.equivariant
        if not isinstance(meta_params, dict) or set(meta_params) != {"log_alpha", "logit_g0", "beta", "f", "equivariant"}:
            check_like(meta_params, jax.eval_shape(self.init_meta_params, jax.random.key(0)), self.name)
        want = jax.tree.map(jnp.shape, jax.eval_shape(layer.init, jax.random.key(0)))
        got = jax.tree.map(jnp.shape, meta_params["equivariant"])
        if want != got:
            raise ValueError(
                "meta_params['equivariant'] does not fit this weight space: its structure (leaves, labels, "
                "unpermuted axis sizes) differs from the one the meta-params were made for."
            )

        def direction(x):
            h = _mlp_apply(meta_params["f"], x, self.sizes, final_activation=True)
            out = layer.apply(meta_params["equivariant"], h)
            return jax.tree.map(lambda y: y[..., 0], out)

        return _transformation(meta_params, direction, use_features=True)
