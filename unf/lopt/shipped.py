"""Learned optimizers that ship with the package, ready to drop into an optax loop.

    opt = unf.lopt.pretrained("transformer-lm", total_steps=2000)   # a hetnet TransformerLM's params (see below)
    opt_state = opt.init(params)
    updates, opt_state = opt.update(grads, opt_state, params)

Meta-params are stored in the format of :mod:`unf.meta.export`: an ``.npz`` beside an ``info.json`` naming the
recipe, the exact command, the budget, the device, the date and the commit that produced them (:func:`info`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import optax


WEIGHTS = Path(__file__).parent / "pretrained_weights"


def available() -> tuple[str, ...]:
    """Returns the names of the shipped optimizers."""
    return tuple(sorted(p.name for p in WEIGHTS.iterdir() if (p / "meta_params.npz").exists())) if WEIGHTS.exists() else ()


def _folder(name: str) -> Path:
    if name not in available():
        raise ValueError(f"name must be one of the shipped optimizers {available()}, got {name!r}.")
    return WEIGHTS / name


def info(name: str) -> dict:
    """Returns how the shipped optimizer ``name`` was made: recipe, command, budget, device, date, commit."""
    return json.loads((_folder(name) / "info.json").read_text())


def tuned_baselines(name: str) -> dict:
    """Returns the baseline settings tuned for the held-out tasks of the shipped optimizer ``name``'s recipe:
    ``{HeldOut.key: {"adamw+cosine": [lr, warm-up], "adam": [lr]}}`` (empty where none were shipped)."""
    path = _folder(name) / "baselines.json"
    return json.loads(path.read_text())["tuned"] if path.exists() else {}


def ladder(name: str) -> tuple[str, Path] | None:
    """Returns the held-out ladder measured for the shipped optimizer ``name`` (``benchmarks.lopt_ladder``): its
    markdown table and the path of its figure; None where none was shipped."""
    table, figure = _folder(name) / "ladder.md", _folder(name) / "ladder.png"
    return (table.read_text(), figure) if table.exists() and figure.exists() else None


def load_pretrained(name: str) -> tuple[Any, Any]:
    """Returns ``(learned optimizer, meta_params)`` of the shipped optimizer ``name``."""
    from unf import recipes

    learned, meta_params, _ = recipes.load_export(_folder(name))
    return learned, meta_params


def pretrained(name: str, *, total_steps: int, learning_rate=None, model: Any = None,
               spec: Any = None) -> optax.GradientTransformationExtraArgs:
    """Returns the shipped learned optimizer ``name`` as an optax transformation for a run of ``total_steps`` steps.

    learning_rate: None for the learned schedule; a float or an optax schedule replaces it. To keep the learned
    schedule's shape at another scale, chain ``optax.scale(k)``: every part of the update, decoupled decay included,
    is proportional to the step size, so the chain is the schedule times ``k``. ``update`` needs ``params``.
    ``"transformer-lm"`` serves a hetnet TransformerLM with a standard body (GELU or SwiGLU feed-forward, RMS norm
    or LayerNorm, learned or rotary positions), at any width, number of heads, depth and sequence length, with
    softmax, NeuTRENO, linear or sparse attention (not the learned indexer, whose kernels have no labels it knows);
    its rule reads each tensor's labels, and a leaf it was not meta-trained on (a SwiGLU gate, a LayerNorm offset)
    takes the labels of its sibling (``w_in``, ``scale``); and a Flax decoder of the same make whose axes carry
    MaxText-style logical names (see :mod:`unf.lopt.flax_transformer`). In
    ``nnx.Optimizer`` the names come with the params; for a linen ``TrainState`` pass ``model``: the boxed
    ``variables["params"]`` from ``init`` (or an nnx model). A hetnet body of one shared block or Hyper-SET
    (``block="recurrent"``, ``"hyperset"``) is served by its labels: ``spec=unf.spec.from_hetnet(params,
    model.axes)``.

    Any other network: the shipped rule reads labels only (no learned correction), so it serves any params whose
    weight-space ``spec`` is given (``unf.spec.from_flax(model)``, ``unf.spec.mlp(params)``, ``unf.spec.cnn(params)``,
    ``unf.spec.from_labels(params, labels)``, or read off its computation: ``unf.spec.infer(model, *example_inputs)``):
    each tensor's muP role, width and matrix view are read off its labels (:mod:`unf.lopt.width`), and leaves whose
    first axis is labelled ``"layers"`` are stacked layers. A Flax model that is not a decoder of the hetnet make
    (projection biases, say) but names every axis logically is served so without ``spec``, from its names. Params it
    cannot serve are refused at ``init``.
    """
    learned, meta_params = load_pretrained(name)
    if spec is not None:
        if model is not None:
            raise ValueError("pass model or spec, not both: model is read for its logical names, spec already "
                             "holds the labels.")
        return _by_labels(name, learned, meta_params, spec, total_steps, learning_rate)
    inner = learned.opt_fn(meta_params, total_steps=total_steps, learning_rate=learning_rate)
    if learned.layer_key is None:
        return inner
    return _in_any_layout(learned, inner, model,
                          lambda found: _by_labels(name, learned, meta_params, found, total_steps, learning_rate))


def _by_labels(name: str, learned, meta_params, spec: Any, total_steps: int,
               learning_rate) -> optax.GradientTransformationExtraArgs:
    """Returns the shipped rule ``learned`` (one without a learned correction) over the params ``spec`` describes,
    every tensor's treatment read off its labels."""
    from unf import spec as spec_lib
    from unf.lopt.adam_rules import EquivariantAdam, LabelRule

    if not isinstance(spec, spec_lib.WeightSpaceSpec):
        raise TypeError("spec must be a unf.spec.WeightSpaceSpec (unf.spec.infer(model, *example_inputs), "
                        "unf.spec.from_flax(model), unf.spec.mlp(params), unf.spec.from_labels(params, labels)), got "
                        f"{type(spec).__name__}.")
    if not isinstance(learned, EquivariantAdam) or learned.correction:
        raise ValueError(f"spec: the shipped optimizer {name!r} has a learned correction whose coefficients belong to "
                         "the leaves of its own models; it serves those models only, not a spec of another.")
    return LabelRule(learned, spec).opt_fn(meta_params, total_steps=total_steps, learning_rate=learning_rate)


def _all_named(tree: Any) -> bool:
    """Returns whether every leaf of a Flax params tree carries one logical name per axis."""
    import numpy as np

    from unf.spec import flax_names

    try:
        params, names = flax_names.names_and_params(tree)
    except (ValueError, TypeError):
        return False
    named = jax.tree.leaves(names, is_leaf=lambda x: x is None or isinstance(x, tuple))
    return all(n is not None and len(n) == np.ndim(x) for n, x in zip(named, jax.tree.leaves(params)))


def _hetnet_body(tree: Any) -> str | None:
    """Returns the block kind of a hetnet TransformerLM whose params ``tree`` is, when that body is not the standard
    one the rule's own layout holds (``"recurrent"``, ``"hyperset"``); None for any other tree."""
    from hetnet import stacks

    if not isinstance(tree, dict) or "tokens" not in tree:
        return None
    return next((kind for kind, stack in stacks.STACKS.items() if kind != "standard" and stack.key in tree), None)


def _in_any_layout(learned, inner: optax.GradientTransformationExtraArgs, model: Any,
                   by_labels) -> optax.GradientTransformationExtraArgs:
    """Returns ``inner`` (the rule of ``learned`` over hetnet TransformerLM params) serving the trees it serves
    itself, Flax decoders' trees, mapped onto the hetnet layout and back (:mod:`unf.lopt.flax_transformer`), and
    other Flax models whose every axis has a logical name, through ``by_labels(spec)``: the rule read off the spec
    of those names."""
    from unf.lopt import flax_transformer
    from unf.lopt.adam_rules import EquivariantAdam
    from unf.lopt.tree_layout import leaf_name
    from unf.spec import flax_names

    own = frozenset(learned.spec.leaf_names)

    def layout_or_labels(tree):
        """Returns the tree's hetnet layout, else the rule over the spec of its logical names."""
        try:
            return flax_transformer.layout(tree)
        except ValueError as not_decoder:
            body = _hetnet_body(tree)
            if body is not None:
                raise ValueError(f"these are the params of a hetnet TransformerLM with block={body!r}; the shipped "
                                 "transformer-lm optimizer serves that body by its labels: pass pretrained(..., "
                                 "spec=unf.spec.from_hetnet(params, model.axes)).") from None
            if not isinstance(learned, EquivariantAdam) or learned.correction:
                raise
            try:
                found = flax_names.from_flax(tree)
            except (ValueError, TypeError) as unreadable:
                # Unnamed leaves are listed already; names that are there but make no spec say why.
                said = f" Nor do its logical names make a spec: {unreadable}" if _all_named(tree) else ""
                raise ValueError(f"{not_decoder}{said} Any other network is served by its labels: give its "
                                 "weight-space spec, read off its computation by pretrained(..., "
                                 "spec=unf.spec.infer(model, *example_inputs)) (or written as "
                                 "unf.spec.from_labels(params, labels), unf.spec.mlp / unf.spec.cnn / "
                                 "unf.spec.from_flax).") from None
            return by_labels(found)

    fixed = None if model is None else layout_or_labels(model)

    layouts: dict = {}
    direct: dict = {}

    def serves_directly(tree, names):
        """Whether the rule serves ``tree`` in its own layout: a hetnet model its correction-free rule labels by
        analogy (a SwiGLU gate, LayerNorm offsets, no position table)."""
        if not isinstance(learned, EquivariantAdam) or learned.correction:
            return False
        if names not in direct:
            try:
                learned.check_params(tree)
                direct[names] = True
            except ValueError:
                direct[names] = False
        return direct[names]

    def aligned(tree, lay=None):
        """Returns ``(route, the tree's leaves in the layout's order, (treedef, where each of those leaves sits in
        the tree))``: route None for hetnet params, a ``Layout``, or the rule over the tree's own labels (an optax
        transformation; the other two None)."""
        flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
        names = [leaf_name(p) for p, _ in flat]
        if set(names) == own or (lay is None and serves_directly(tree, tuple(names))):
            return None, None, None
        if lay is None:
            # Keyed by leaf names: nnx.Optimizer hands init its Variables (with the names) and update bare arrays.
            key = tuple(names)
            if key not in layouts:
                layouts[key] = fixed if fixed is not None else layout_or_labels(tree)
            lay = layouts[key]
            if not isinstance(lay, flax_transformer.Layout):  # the rule over the tree's own labels
                return lay, None, None
        by_name = dict(zip(names, (x for _, x in flat)))
        wanted = [n[len("['params']"):] if n not in by_name and n.startswith("['params']") else n for n in lay.names]
        if set(wanted) != set(names):
            raise ValueError(f"the tree holds the leaves {names}, but the layout was read from a model with {wanted}.")
        order = {n: i for i, n in enumerate(names)}
        return lay, [by_name[n] for n in wanted], (treedef, [order[n] for n in wanted])

    def init_fn(params):
        if not jax.tree.leaves(params):  # optax.tree_map_params's placeholder: no layout to read
            return inner.init(params)
        lay, leaves, _ = aligned(params)
        if lay is not None and leaves is None:
            return lay.init(params)
        return inner.init(params if lay is None else flax_transformer.to_hetnet(lay, leaves))

    def update_fn(grads, state, params=None, **extra):
        if params is None:
            raise ValueError("this learned optimizer reads the weights: call update(grads, state, params).")
        lay, leaves, _ = aligned(params)
        if lay is None:
            return inner.update(grads, state, params, **extra)
        if leaves is None:
            return lay.update(grads, state, params, **extra)
        _, grad_leaves, (treedef, positions) = aligned(grads, lay)
        updates, state = inner.update(flax_transformer.to_hetnet(lay, grad_leaves), state,
                                      flax_transformer.to_hetnet(lay, leaves), **extra)
        out = [None] * len(positions)
        for i, x in zip(positions, flax_transformer.from_hetnet(lay, updates, leaves)):
            out[i] = x
        return treedef.unflatten(out), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
