"""Adam plus a learned correction: the learned optimizers that start as Adam and move away only where that pays.

For every tensor the network reads Adam-normalised moments, the weight relative to its RMS and training progress
(:mod:`unf.lopt.adam_features`), runs pointwise layers and then an output layer that is the UNF equivariant layer
(:class:`EquivariantAdam`) or one more pointwise layer (:class:`PerParameterAdam`), and emits two channels: a
direction correction ``d`` and a log-magnitude ``s``. The update is

    u = -lr(t) * (n / 32) ** -alpha[role] * exp(s) * rms(a) / rms(a + d) * (a + d) - lr(t) * weight_decay * w,

with ``a`` Adam's update direction, ``rms`` over each tensor (the direction is RMS-normalised to Adam's scale at every
step), ``(role, n)`` the tensor's muP role and effective width read off its labels (:mod:`unf.lopt.width`) with a
learned exponent per role, and ``lr(t)`` a learned schedule over training progress (:mod:`unf.lopt.schedule`) or the
user's own. The output layer, the exponents, the schedule's knots and the weight decay start at zero, so at
initialisation the rule is exactly ``optax.adam(1e-3)``.

The rules that produce ``d`` and ``s`` are in :mod:`unf.lopt.adam_rules`; their ``opt_fn(meta_params,
total_steps=...)`` returns this module's :func:`transformation`, an optax ``GradientTransformationExtraArgs`` whose
``update(grads, state, params)`` needs ``params`` and no other extra arg. Build it inside the meta-loss, so
meta-params are traced.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hetnet import validation
from unf import layers
from unf import spec as spec_lib
from unf.lopt import adam_features as feats
from unf.lopt import orthogonal as orthogonal_lib
from unf.lopt import schedule
from unf.lopt import tree_layout
from unf.lopt import width
from unf.spec import WeightSpaceSpec, analogy

HIDDEN = 8
DEFAULT_LR = 1e-3
MAX_LOG_MAGNITUDE = 3.0
ScalarOrSchedule = Union[float, jax.Array, Callable[[jax.Array], jax.Array]]


class LearnedAdamState(NamedTuple):
    """First moments (one tree per decay in ``BETA1S``), the second moment and the step count. Moments are float32
    whatever the params' dtype, so the state's types never change across steps (``lax.scan``-safe)."""

    momenta: tuple
    second_moment: Any
    count: jax.Array


def _zeros_f32(params):
    return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)


def _rms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(x)))


def _check_total_steps(total_steps):
    if isinstance(total_steps, jax.Array) and total_steps.ndim == 0:
        return total_steps  # traced: meta-training draws each inner run's length
    return validation.positive_int("total_steps", total_steps, "the length of the training run the schedule spans")


def _check_learning_rate(learning_rate):
    """Returns ``learning_rate`` once it is None, a schedule, or a finite non-negative scalar; a traced scalar (meta-
    training's) passes unread."""
    if learning_rate is None or callable(learning_rate) or isinstance(learning_rate, jax.core.Tracer):
        return learning_rate
    accepted = ("learning_rate must be None (the learned schedule), an optax schedule (step -> rate) or a finite, "
                "non-negative scalar")
    if isinstance(learning_rate, (bool, str)) or not isinstance(learning_rate, (int, float, np.number, np.ndarray,
                                                                                 jax.Array)):
        raise TypeError(f"{accepted}, got {learning_rate!r} ({type(learning_rate).__name__}).")
    if np.ndim(learning_rate) != 0:
        raise ValueError(f"{accepted}, got an array of shape {np.shape(learning_rate)}.")
    value = float(learning_rate)
    if not np.isfinite(value) or value < 0:
        # A negative rate climbs the loss; NaN fills the weights with NaN from the first step.
        raise ValueError(f"{accepted}, got {value!r}.")
    return learning_rate


def _check_floating(params: Any) -> None:
    """Raises TypeError naming the first leaf of ``params`` that is not real floating point: the rule's moments and
    updates are float32, so an integer leaf would take fractional steps it cannot hold and a complex one would lose
    its imaginary part."""
    for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = jnp.result_type(p)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"params leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}; the learned "
                            "optimizer updates real floating-point params only (float32, bfloat16, float16, "
                            "float64). Keep integer or complex leaves out of the optimized tree (optax.partition, "
                            "nnx.Optimizer(wrt=nnx.Param)).")


def _check_matches_state(grads: Any, state: LearnedAdamState) -> None:
    """Raises ValueError naming the first leaf of ``grads`` whose shape is not the one ``init`` saw."""
    seen = jax.tree.structure(state.second_moment)
    given = jax.tree.structure(grads)
    if given != seen:
        raise ValueError(f"update got grads/params of another tree than init saw: init saw {seen}, update got {given}. "
                         "Build a new optimizer state (init) for a changed model.")
    for (path, g), v in zip(jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(state.second_moment)):
        if jnp.shape(g) != jnp.shape(v):
            raise ValueError(f"update got {jax.tree_util.keystr(path)} of shape {jnp.shape(g)}, but init saw that "
                             f"leaf with shape {jnp.shape(v)}. Build a new optimizer state (init) for a changed model.")


def mlp_init(key: jax.Array, sizes: tuple[int, ...]) -> list:
    keys = jax.random.split(key, len(sizes) - 1)
    return [layers.PointwiseLinear(a, b).init(k) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def hidden_features(params: list, x: Any, sizes: tuple[int, ...]) -> Any:
    """Returns the pointwise layers applied to every parameter's features: one matmul chain over all tensors'
    rows at once (the layers are shared), which costs far fewer ops than one chain per tensor."""
    leaves, treedef = jax.tree.flatten(x)
    rows = jnp.concatenate([leaf.reshape(-1, leaf.shape[-1]) for leaf in leaves], axis=0)
    for p, a, b in zip(params, sizes[:-1], sizes[1:]):
        rows = jax.nn.relu(layers.PointwiseLinear(a, b).apply(p, rows))
    splits = np.cumsum([int(np.prod(leaf.shape[:-1])) for leaf in leaves])[:-1]
    parts = jnp.split(rows, splits, axis=0)
    return treedef.unflatten([part.reshape(leaf.shape[:-1] + (rows.shape[-1],)) for part, leaf in zip(parts, leaves)])


def transformation(
    meta_params: dict,
    correction: Callable[[Any, Any], Any] | None,
    total_steps: int | jax.Array,
    learning_rate: ScalarOrSchedule | None = None,
    layer_key: str | None = None,
    spec: WeightSpaceSpec | None = None,
    check: Callable[[Any], None] | None = None,
    orthogonal: bool = False,
    analogues: Mapping[str, str] | None = None,
    stacked_by_labels: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Returns the learned-Adam optax transformation.

    layer_key: the params entry holding stacked layers (leaves with a leading layers axis): every per-tensor
    statistic of its leaves (features, the update's RMS normalisation) is taken per layer.

    correction(params, features) -> tree like params with leaves ``[*leaf_shape, 2]`` (direction, log-magnitude), or
    None for none (the base direction with the learned step size, decay and width factors);
    total_steps: the run's length, a positive int (or a scalar array inside meta-training, where runs of several
    lengths share one compiled step); learning_rate: None for the learned schedule, else a float or an optax
    schedule that replaces it; spec: the labels the muP width factors are read from (None: every factor is 1);
    check(params): raises ValueError at ``init`` for params the rule cannot serve; orthogonal: the base direction of
    every hidden matrix (two or more width axes, read from ``spec``'s labels) is its orthogonalised Nesterov momentum
    (Muon's) scaled to the RMS of Adam's direction, instead of Adam's direction itself; analogues: for a rule that
    reads labels only (no correction), leaves ``spec`` lacks take the labels of a sibling
    (:func:`unf.spec.analogy.extend_by_analogy`), so the same rule serves a SwiGLU gate or LayerNorm offsets;
    stacked_by_labels: instead of ``layer_key``, the leaves whose first axis ``spec`` labels ``"layers"`` are the
    stacked layers (a scanned Flax model's, wherever they sit in the tree).
    """
    if orthogonal and spec is None:
        raise ValueError("orthogonal=True needs a spec: the labels say which tensors are matrices, and how.")
    total_steps = _check_total_steps(total_steps)
    learning_rate = _check_learning_rate(learning_rate)
    # The features read a momentum at every rate; the base direction alone reads Adam's only, so without a
    # correction the state holds what Adam's does.
    rates = feats.BETA1S if correction is not None else (feats.ADAM_BETA1,)
    if analogues and correction is not None:
        raise ValueError("analogues serve rules without a correction only: a correction holds coefficients per "
                         "pair of the spec's own leaves.")
    if stacked_by_labels and (spec is None or layer_key is not None):
        raise ValueError("stacked_by_labels reads the stacking axis off the spec's labels: it needs a spec and no "
                         f"layer_key (got layer_key={layer_key!r}).")
    served_spec = _label_source(spec, analogues)

    def stacked_of(params):
        if stacked_by_labels:
            current = spec_lib.relabel(served_spec(params), params)
            return current.unflatten(width.stacked_by_labels(current))
        return tree_layout.stacked_leaves(params, layer_key)

    def init_fn(params):
        if not jax.tree.leaves(params):
            # optax.tree_map_params (sharding the state like the params) initialises with a tree of no leaves and
            # reads where it lands in the state: the state holds it wherever it holds a copy of the params.
            return LearnedAdamState(tuple(params for _ in rates), params, jnp.zeros((), jnp.int32))
        _check_floating(params)
        params, _ = tree_layout.canonical(params, served_spec(params))
        if check is not None:
            check(params)
        stacked_of(params)
        # A buffer of its own per moment: a step that donates its state cannot donate one buffer twice.
        return LearnedAdamState(tuple(_zeros_f32(params) for _ in rates), _zeros_f32(params),
                                jnp.zeros((), jnp.int32))

    def update_fn(grads, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("this learned optimizer reads the weights: call update(grads, state, params).")
        own = served_spec(params)
        params, _ = tree_layout.canonical(params, own)
        grads, restore = tree_layout.canonical(grads, own)
        _check_matches_state(grads, state)
        updates, state = compiled_update(grads, state, params)
        return restore(updates), state

    def update(grads, state, params):
        count = state.count + 1
        g32 = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads)
        momenta, v = _moments(g32, state, rates)
        stacked = stacked_of(params)
        treedef = jax.tree.structure(params)
        if correction is None:  # the base direction alone: no features to compute
            out = [None] * treedef.num_leaves
        else:
            out = jax.tree.leaves(correction(params, feats.features(params, g32, momenta, v, count, total_steps,
                                                                     stacked)))
        adam_m = momenta[rates.index(feats.ADAM_BETA1)]
        labelled = served_spec(params)
        # Decay only ever shrinks weights: a negative one grows them without bound over a long run.
        decay = jnp.maximum(meta_params["weight_decay"], 0.0)
        factors = _width_factors(meta_params["width_exponent"], params, stacked, labelled)
        matrices = _matrix_axes(params, stacked, labelled) if orthogonal else [None] * treedef.num_leaves
        leaves = [jax.tree.leaves(t) for t in (stacked, factors, grads, params, adam_m, v)] + [out]
        fn = functools.partial(_leaf_update, lr=_step_size(meta_params, learning_rate, count, total_steps),
                               decay=decay, count=count)
        updated = []
        for per_layer, factor, axes, g, p, m, vv, o in zip(leaves[0], leaves[1], matrices, *leaves[2:]):
            # A stacked leaf is orthogonalised in one call with the layers as a batch axis: vmapping the
            # iteration per layer instead lowers to slower batched products (0.9 vs 1.3 ms a step, d_model 64).
            ortho = None if axes is None else _orthogonal_direction(g, m, axes, per_layer)
            updated.append((jax.vmap(fn, in_axes=(0,) * 6 + (None,)) if per_layer else fn)(g, p, m, vv, o, ortho,
                                                                                             factor))
        return treedef.unflatten(updated), LearnedAdamState(momenta, v, count)

    # Compiled once per transformation: called eagerly, the many small ops of the rule would each compile on the
    # first step; inside a user's jit (or meta-training's vmap) it is inlined.
    compiled_update = jax.jit(update)
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _label_source(spec: WeightSpaceSpec | None,
                  analogues: Mapping[str, str] | None) -> Callable[[Any], WeightSpaceSpec | None]:
    """Returns ``tree -> the spec the rule reads the tree's labels from``: ``spec`` itself, or with ``analogues``
    the tree's own spec, its new leaves labelled by their siblings (built once per layout of names and shapes)."""
    if spec is None or not analogues:
        return lambda tree: spec
    served: dict = {}

    def source(tree):
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        key = tuple((tree_layout.leaf_name(p), np.shape(x)) for p, x in flat)
        if key not in served:
            served[key] = analogy.extend_by_analogy(spec, tree, analogues)
        return served[key]

    return source


def _step_size(meta_params: dict, learning_rate: ScalarOrSchedule | None, count: jax.Array,
               total_steps: int | jax.Array) -> jax.Array:
    """Returns step ``count``'s learning rate: the learned schedule's when ``learning_rate`` is None."""
    if learning_rate is None:
        return schedule.learning_rate(meta_params["schedule"], count - 1, total_steps)
    if callable(learning_rate):
        return jnp.asarray(learning_rate(count - 1), jnp.float32)
    return jnp.asarray(learning_rate, jnp.float32)


def _moments(g32: Any, state: LearnedAdamState, rates: tuple[float, ...]) -> tuple[tuple, Any]:
    """Returns the momenta at ``rates`` and the second moment, updated by ``g32``."""
    momenta = tuple(
        jax.tree.map(lambda m, g, b=b: b * m + (1.0 - b) * g, ms, g32)
        for b, ms in zip(rates, state.momenta)
    )
    v = jax.tree.map(lambda n, g: feats.BETA2 * n + (1.0 - feats.BETA2) * jnp.square(g), state.second_moment, g32)
    return momenta, v


def _orthogonal_direction(g: jax.Array, m: jax.Array, axes: tuple, per_layer: bool) -> jax.Array:
    """Returns the orthogonalised Nesterov momentum of one tensor (Muon's direction), ``axes`` its matrix view within
    one layer; a ``per_layer`` leaf's leading layers axis is a batch axis."""
    nesterov = feats.ADAM_BETA1 * m + (1.0 - feats.ADAM_BETA1) * jnp.asarray(g, jnp.float32)
    if per_layer:
        axes = tuple(tuple(i + 1 for i in side) for side in axes)
    return orthogonal_lib.orthogonalize(nesterov, axes)


def _leaf_update(g, p, m, v, correction, ortho, factor, *, lr, decay, count):
    """Returns one tensor's update (``g``'s dtype): the base direction (Adam's, or the orthogonalised Nesterov
    momentum ``ortho`` of a hidden matrix at Adam's RMS) plus the learned ``correction[..., 0]``, rescaled back to the
    base's RMS, times the learned magnitude ``exp(correction[..., 1])`` (the base alone when ``correction`` is
    None), the width ``factor`` and ``lr``, plus decoupled decay."""
    a = feats.bias_corrected(m, feats.ADAM_BETA1, count) / (
        jnp.sqrt(feats.bias_corrected(v, feats.BETA2, count)) + feats.EPS
    )
    if ortho is not None:
        a = ortho * (_rms(a) / jnp.maximum(_rms(ortho), 1e-30))
    if correction is None:
        step = a
    else:
        direction = a + correction[..., 0]
        scale = _rms(a) / jnp.maximum(_rms(direction), 1e-30)
        step = jnp.exp(jnp.clip(correction[..., 1], -MAX_LOG_MAGNITUDE, MAX_LOG_MAGNITUDE)) * scale * direction
    u = -lr * (factor * step + decay * jnp.asarray(p, jnp.float32))
    return u.astype(jnp.result_type(g))


def _width_factors(exponents: jax.Array, params: Any, stacked: Any, spec: WeightSpaceSpec | None) -> Any:
    """Returns a tree like ``params`` of scalars ``(n / REFERENCE_WIDTH) ** -exponents[role]`` (ones without a spec)."""
    if spec is None:
        return jax.tree.map(lambda _: jnp.ones((), jnp.float32), params)
    current = spec_lib.relabel(spec, params)
    per_leaf = width.roles(current, jax.tree.leaves(stacked))
    factors = [jnp.exp(-exponents[role] * np.float32(np.log(n / width.REFERENCE_WIDTH))) for role, n in per_leaf]
    return current.unflatten(factors)


def _matrix_axes(params: Any, stacked: Any, spec: WeightSpaceSpec) -> list:
    """Returns per leaf (flatten order) the matrix view of a hidden tensor within one layer, or None."""
    return width.matrix_views(spec_lib.relabel(spec, params), jax.tree.leaves(stacked))
