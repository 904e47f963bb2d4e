"""The two Adam-based learned rules: :class:`EquivariantAdam` (the UNF equivariant correction, the one that ships)
and :class:`PerParameterAdam` (a per-parameter correction, its baseline). Both share the update of
:func:`unf.lopt.learned_adam.transformation` and start exactly as ``optax.adam(1e-3)``. :class:`LabelRule` serves
an :class:`EquivariantAdam` without its correction on any network, through that network's labels."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unf import layers
from unf import spec as spec_lib
from unf.lopt import adam_features as feats
from unf.lopt import schedule
from unf.lopt import width
from unf.lopt.learned_adam import (DEFAULT_LR, HIDDEN, ScalarOrSchedule, hidden_features, mlp_init,
                                   transformation)
from unf.lopt.meta_params import check_like, check_settings
from unf.lopt.protocol import OwnNetworksOnly
from unf.lopt.tree_layout import leaf_names
from unf.spec import WeightSpaceSpec, analogy


def _base_meta_params(key: jax.Array, hidden: int) -> dict:
    return {
        "schedule": schedule.init(DEFAULT_LR),
        "weight_decay": jnp.zeros((), jnp.float32),
        "width_exponent": jnp.zeros((len(width.ROLES),), jnp.float32),
        "hidden": mlp_init(key, (feats.NUM_FEATURES, hidden, hidden)),
    }


def project_meta_params(meta_params: dict) -> dict:
    """Returns ``meta_params`` with the weight decay at zero or above, applied after every meta-step. The update
    clips a negative decay to zero, where the loss no longer depends on it: ES estimates there are noise, so a decay
    meta-training once pushed below zero could never be brought back. Held at zero, a perturbation upward still
    changes the loss, and the estimate can raise it again."""
    return {**meta_params, "weight_decay": jnp.maximum(meta_params["weight_decay"], 0.0)}


def mup_start(meta_params: dict) -> dict:
    """Returns ``meta_params`` with the muP exponents set (hidden and output tensors step like ``1 / width``,
    embeddings and vectors like O(1)): the starting point meta-training moves from, so widths transfer from step 0."""
    exponents = np.zeros(len(width.ROLES), np.float32)
    exponents[[width.ROLES.index("hidden"), width.ROLES.index("output")]] = 1.0
    return {**meta_params, "width_exponent": jnp.asarray(exponents)}


#: Peak step size at the reference width of the orthogonal rule's starting point: its hidden matrices step like
#: Muon's (tuned Muon on the ladder's d32-d64 rungs: 1e-2 to 3e-2), the rest scaled by the muP factors.
ORTHOGONAL_LR = 2e-2

#: Width exponent of the orthogonal rule's hidden matrices. Their direction is orthogonalised (every singular value
#: equal) and rescaled to Adam's per-tensor RMS ``r``, which does not grow or shrink with the width; an ``[m, n]``
#: matrix then steps with spectral norm ``r * sqrt(max(m, n))``. The spectral condition of muP (Yang, Simon and
#: Bernstein 2023) keeps that norm at ``O(sqrt(fan_out / fan_in))``, so the step must shrink like ``1 / sqrt(width)``,
#: not like Adam's ``1 / width`` (Adam's direction is close to rank one, whose spectral norm grows with the width
#: like its RMS times the width).
ORTHOGONAL_HIDDEN_EXPONENT = 0.5


def orthogonal_start(meta_params: dict) -> dict:
    """Returns ``meta_params`` at the starting point of the orthogonal rule (``base="orthogonal"``): the muP exponents
    of :func:`mup_start` with the hidden matrices' at :data:`ORTHOGONAL_HIDDEN_EXPONENT` (the spectral muP exponent
    of an orthogonalised step), and a warm-up + cosine schedule peaking at :data:`ORTHOGONAL_LR` at the reference
    width."""
    start = mup_start(meta_params)
    exponents = start["width_exponent"].at[width.ROLES.index("hidden")].set(ORTHOGONAL_HIDDEN_EXPONENT)
    return {**start, "width_exponent": exponents, "schedule": schedule.warmup_cosine(ORTHOGONAL_LR)}


@dataclasses.dataclass(frozen=True)
class PerParameterAdam(OwnNetworksOnly):
    """Adam plus a correction computed for every parameter alone (pointwise layers only): the non-equivariant
    baseline with the same inputs, outputs and update as :class:`EquivariantAdam`. ``spec`` (optional) gives the
    labels its muP width factors are read from; without one every factor is 1. ``layer_key`` names the params entry
    of stacked layers, whose per-tensor statistics are then taken per layer."""

    spec: WeightSpaceSpec | None = None
    hidden: int = HIDDEN
    layer_key: str | None = None
    name: str = "mlp-adam"
    uses_total_steps: ClassVar[bool] = True

    def __post_init__(self):
        check_settings(self.spec, self.hidden, self.layer_key, allow_no_spec=True)

    def check_params(self, params: Any) -> None:
        """Raises ValueError when a spec was given and ``params`` do not carry its leaves (any width and depth)."""
        if self.spec is not None:
            spec_lib.relabel(self.spec, params)

    @property
    def sizes(self) -> tuple[int, ...]:
        return (feats.NUM_FEATURES, self.hidden, self.hidden)

    project_meta_params = staticmethod(project_meta_params)

    def init_meta_params(self, key: jax.Array) -> dict:
        """Returns meta-params at which the rule is exactly Adam (lr 1e-3): the output layer is zero."""
        k_hidden, _ = jax.random.split(key)
        out = jax.tree.map(jnp.zeros_like, layers.PointwiseLinear(self.hidden, 2).init(key))
        return {**_base_meta_params(k_hidden, self.hidden), "output": out}

    def opt_fn(self, meta_params: dict, *, total_steps: int | jax.Array,
               learning_rate: ScalarOrSchedule | None = None) -> optax.GradientTransformationExtraArgs:
        """Returns the optax transformation for a run of ``total_steps`` steps (see :func:`transformation`)."""
        check_like(meta_params, jax.eval_shape(self.init_meta_params, jax.random.key(0)), self.name)
        out_layer = layers.PointwiseLinear(self.hidden, 2)

        def correction(params, x):
            return out_layer.apply(meta_params["output"], hidden_features(meta_params["hidden"], x, self.sizes))

        return transformation(meta_params, correction, total_steps, learning_rate, self.layer_key, self.spec,
                              self.check_params)


#: The direction the correction is added to: Adam's, or on hidden matrices Muon's orthogonalised momentum at Adam's
#: per-tensor RMS (``"orthogonal"``; every other tensor keeps Adam's).
BASES = ("adam", "orthogonal")


@dataclasses.dataclass(frozen=True)
class EquivariantAdam:
    """Adam plus a correction from pointwise layers and then the UNF equivariant layer over ``spec``: the update of
    every tensor reads every other tensor's state, and commutes with the weight space's permutations.

    The meta-params depend on the spec's labels and unpermuted axis sizes only: the same meta-params, and the same
    object, serve any width (the layer is rebuilt from the labels and the params' shapes at trace time). Under
    ``optax.masked`` or ``optax.partition`` the optimizer sees a sub-tree: build it from that sub-tree's spec.

    Any depth: with ``layer_key`` (``"blocks"`` for hetnet models) ``spec`` describes a model whose
    ``params[layer_key]`` leaves are stacked along a leading layers axis (any depth gives the same optimizer), and
    ``params[layer_key]`` may hold any number of layers. Layer ``i`` is updated through its own one-layer view (the
    shared leaves plus layer ``i``'s slice, see :func:`unf.spec.layer_view`); each shared leaf takes the mean of its
    outputs over the views. Every view's layer is equivariant to the shared groups and to its layer's own groups,
    and untouched by the other layers', so the whole update keeps the model's exact symmetry, with one set of
    meta-params for every depth.

    ``correction=False`` leaves the equivariant correction out (it is not computed): the base direction with the
    learned step-size schedule, decay and width factors, the same meta-params read.
    """

    spec: WeightSpaceSpec
    hidden: int = HIDDEN
    layer_key: str | None = None
    name: str = "unf-adam"
    base: str = "adam"
    correction: bool = True
    uses_total_steps: ClassVar[bool] = True

    def __post_init__(self):
        check_settings(self.spec, self.hidden, self.layer_key)
        if not isinstance(self.correction, bool):
            raise TypeError(f"correction must be True or False, got {self.correction!r}.")
        if self.base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {self.base!r}.")
        view = self.spec if self.layer_key is None else spec_lib.layer_view(self.spec, self.layer_key)
        object.__setattr__(self, "_view_spec", spec_lib.unpermuted_as_groups(view))

    @property
    def view_spec(self) -> WeightSpaceSpec:
        """The spec the equivariant layer is built on: one layer's view with ``layer_key``, else ``spec``; unpermuted
        axes made groups of their own (:func:`unf.spec.unpermuted_as_groups`), so the meta-params' size does not
        depend on any axis's size."""
        return self._view_spec

    @property
    def sizes(self) -> tuple[int, ...]:
        return (feats.NUM_FEATURES, self.hidden, self.hidden)

    def check_params(self, params: Any) -> None:
        """Raises ValueError unless ``params`` fit this optimizer's spec (at any width and depth), naming the leaves
        that are missing or extra. With the correction, the leaves must be exactly the spec's; without it the rule
        reads labels only, so leaves may be missing (a rotary model has no position table) and a SwiGLU gate or a
        LayerNorm offset takes the labels of its sibling (:data:`unf.spec.analogy.HETNET_ANALOGUES`)."""
        if not self.correction:
            analogy.extend_by_analogy(self.spec, params, analogy.HETNET_ANALOGUES)
            return
        names = leaf_names(params)
        missing = [n for n in self.spec.leaf_names if n not in names]
        extra = [n for n in names if n not in self.spec.leaf_names]
        if missing or extra:
            hint = spec_lib.prefix_hint(self.spec.leaf_names, names)
            raise ValueError(
                f"{self.name}: params do not fit this optimizer's weight space (missing {missing}, extra {extra}). "
                "Its equivariant layer holds coefficients for every pair of the leaves it was built for, so a model "
                "with other leaves (a SwiGLU gate, LayerNorm biases, another architecture) needs an optimizer built "
                "from its own spec (equivariant_adam(spec)), the per-parameter rule (per_parameter_adam()) or this "
                "rule without its correction (correction=False); under optax.masked / optax.partition build "
                "EquivariantAdam from the spec of the sub-tree it updates." + hint)
        spec_lib.relabel(self.spec, params)

    def _layer(self, spec: WeightSpaceSpec) -> layers.EquivariantLinear:
        return layers.cached_equivariant(spec, self.hidden, 2)

    project_meta_params = staticmethod(project_meta_params)

    def init_meta_params(self, key: jax.Array) -> dict:
        """Returns meta-params at which the rule is exactly Adam (lr 1e-3): the equivariant output layer is zero."""
        k_hidden, k_out = jax.random.split(key)
        out = jax.tree.map(jnp.zeros_like, self._layer(self.view_spec).init(k_out))
        return {**_base_meta_params(k_hidden, self.hidden), "output": out}

    def opt_fn(self, meta_params: dict, *, total_steps: int | jax.Array,
               learning_rate: ScalarOrSchedule | None = None) -> optax.GradientTransformationExtraArgs:
        """Returns the optax transformation for a run of ``total_steps`` steps (see :func:`transformation`)."""
        check_like(meta_params, jax.eval_shape(self.init_meta_params, jax.random.key(0)), self.name)

        def one_view(params, x):
            layer = self._layer(spec_lib.relabel(self.view_spec, params))
            if layer.spec.leaf_names != self.view_spec.leaf_names:
                raise ValueError(
                    f"params hold the leaves {list(layer.spec.leaf_names)} but this optimizer's equivariant layer "
                    f"spans {list(self.view_spec.leaf_names)}; under optax.masked / optax.partition build "
                    "EquivariantAdam from the spec of the sub-tree it updates."
                )
            return layer.apply(meta_params["output"], hidden_features(meta_params["hidden"], x, self.sizes))

        def correction(params, x):
            if self.layer_key is None:
                return one_view(params, x)
            key = self.layer_key
            # One compiled view for every depth: layers are vmapped, the shared leaves broadcast into each view.
            axes_of = lambda tree: {k: (0 if k == key else None) for k in tree}  # noqa: E731
            outs = jax.vmap(one_view, in_axes=(axes_of(params), axes_of(x)))(params, x)
            return {k: (o if k == key else jax.tree.map(lambda y: jnp.mean(y, axis=0), o)) for k, o in outs.items()}

        return transformation(meta_params, correction if self.correction else None, total_steps, learning_rate,
                              self.layer_key, self.spec, self.check_params, orthogonal=self.base == "orthogonal",
                              analogues=None if self.correction else analogy.HETNET_ANALOGUES)

    def serving(self, spec: WeightSpaceSpec, params: Any) -> Any:
        """Returns the rule that trains ``params`` (``spec``: their weight space): this one where it serves them,
        else, without a correction, the same rule over ``spec``'s labels (:class:`LabelRule`), so one set of
        meta-params can be meta-trained on transformers, MLPs, CNNs and LSTMs at once. With a correction the answer
        is this rule, which refuses other networks when it is built on them."""
        if self.correction:
            return self
        try:
            self.check_params(params)
        except ValueError:
            return LabelRule(self, spec)
        return self


@dataclasses.dataclass(frozen=True)
class LabelRule(OwnNetworksOnly):
    """The rule of ``rule`` (an :class:`EquivariantAdam` without its correction) over the params ``spec``
    describes, whatever network they belong to: each tensor's muP role, width and matrix view are read off the
    spec's labels (:mod:`unf.lopt.width`), and leaves whose first axis is labelled ``"layers"`` are stacked layers.
    It reads the meta-params ``rule`` reads, so the two share them."""

    rule: EquivariantAdam
    spec: WeightSpaceSpec
    layer_key: ClassVar[None] = None
    uses_total_steps: ClassVar[bool] = True

    def __post_init__(self):
        if not isinstance(self.rule, EquivariantAdam) or self.rule.correction:
            raise ValueError("rule must be an EquivariantAdam without its correction (correction=False): a learned "
                             "correction holds coefficients per pair of its own model's leaves, so it cannot serve "
                             f"another network's labels; got {self.rule!r}.")
        if not isinstance(self.spec, WeightSpaceSpec):
            raise TypeError("spec must be a unf.spec.WeightSpaceSpec (unf.spec.infer, from_flax, mlp, cnn, "
                            f"from_labels), got {type(self.spec).__name__}.")

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def hidden(self) -> int:
        return self.rule.hidden

    project_meta_params = staticmethod(project_meta_params)

    def init_meta_params(self, key: jax.Array) -> dict:
        return self.rule.init_meta_params(key)

    def check_params(self, params: Any) -> None:
        """Raises ValueError unless ``params`` carry the leaves of ``spec`` (any width)."""
        spec_lib.relabel(self.spec, params)

    def opt_fn(self, meta_params: dict, *, total_steps: int | jax.Array,
               learning_rate: ScalarOrSchedule | None = None) -> optax.GradientTransformationExtraArgs:
        """Returns the optax transformation for a run of ``total_steps`` steps (see :func:`transformation`)."""
        check_like(meta_params, jax.eval_shape(self.init_meta_params, jax.random.key(0)), self.name)
        return transformation(meta_params, None, total_steps, learning_rate, None, self.spec, self.check_params,
                              orthogonal=self.rule.base == "orthogonal", stacked_by_labels=True)
