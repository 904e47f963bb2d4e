"""Weight-space specs from the logical axis names flax users already write for sharding.

``nnx.with_partitioning(init, ("embed", "mlp"))`` and ``nn.with_logical_partitioning(init, ("embed", "mlp"))`` name
every parameter axis. A rule table says what each name means for the network's symmetry:

- ``"shared"``: one permutation group for the whole model (the residual stream ``embed``);
- ``"per_layer"``: a group of one layer (MLP units, heads, head dims). In a model whose layers are separate modules
  the group is scoped by the layer's path (the path up to its first numbered component: ``blocks/0``,
  ``layers_3``), so each layer's units permute independently; a model with one layer needs no number. On a tensor
  stacked over a ``"layers"`` axis (``nn.scan``, ``nnx.scan``) the group is :class:`hetnet.axes.Nested` in that
  axis: one independent permutation per layer index. An MLP's hidden layers are not layers in this sense: name each
  hidden axis (``hidden_1``, ``hidden_2``) and mark it ``"shared"``, or use :func:`unf.spec.mlp`;
- ``"unpermuted"``: named for sharding but not permuted (``vocab``). The stacking axis ``layers`` is kept as a label:
  fixed (``layers="exact"``, the model's own symmetry) or a permuted group (``layers="tied"``), as in
  :func:`unf.spec.from_hetnet`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax

from hetnet.axes import LAYERS, Nested
from unf.spec import LAYERS_MODES, WeightSpaceSpec, from_labels

ROLES = ("shared", "per_layer", "unpermuted")

#: MaxText-style logical names.
FLAX_RULES: dict[str, str] = {
    "embed": "shared",
    "mlp": "per_layer",
    "heads": "per_layer",
    "q_heads": "per_layer",
    "kv_heads": "per_layer",
    "kv": "per_layer",
    "head_dim": "per_layer",
    "vocab": "unpermuted",
    "layers": "unpermuted",
}

_NUMBERED = re.compile(r"^(\d+|.*_\d+)$")
_AUTONAMED = re.compile(r"^[A-Z]\w*_\d+$")


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _layer_scope(path: tuple) -> str:
    """Returns the path up to the leaf's layer: its first numbered component (``blocks/0``, ``Block_3``), not counting
    the leaf's own module when linen auto-named it (``Dense_0`` in ``Dense_0/kernel`` is a sublayer, not a layer)."""
    names = [_key_name(e) for e in path]
    candidates = names[:-1]
    if len(candidates) >= 1 and _AUTONAMED.match(candidates[-1]):
        candidates = candidates[:-1]
    for i, name in enumerate(candidates):
        if _NUMBERED.match(name):
            return "/".join(names[: i + 1])
    return ""


def _names_and_params(model_or_variables: Any) -> tuple[Any, Any]:
    """Returns ``(params, names)``: the pure params tree and, per leaf, a tuple of logical names or None."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a core dependency
        nnx = None
    import flax.linen as nn

    if nnx is not None and isinstance(model_or_variables, (nnx.Module, nnx.State)):
        state = nnx.state(model_or_variables, nnx.Param) if isinstance(model_or_variables, nnx.Module) \
            else model_or_variables
        specs = nnx.to_pure_dict(jax.tree.map(lambda v: v, nnx.get_partition_spec(state)))
        return nnx.to_pure_dict(state), specs
    if isinstance(model_or_variables, Mapping):
        boxed = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
        specs = jax.tree.map(lambda x: tuple(x.names) if isinstance(x, nn.LogicallyPartitioned) else None,
                             model_or_variables, is_leaf=boxed)
        return nn.unbox(model_or_variables), specs
    raise TypeError("model_or_variables must be an nnx Module or State, or linen variables (a dict from init); got "
                    f"{type(model_or_variables).__name__}.")


def from_flax(model_or_variables: Any, rules: Mapping[str, str] | None = None,
              overrides: Mapping[str, tuple] | None = None, *, layers: str = "exact") -> WeightSpaceSpec:
    """Returns the spec of a flax model's params from its logical axis names.

    model_or_variables: an ``nnx.Module`` (its ``nnx.Param`` state) or ``nnx.State``, whose params are then
    ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``; or linen variables from ``init`` (boxed by
    ``nn.with_logical_partitioning``), whose params are ``nn.unbox(variables)``. The spec describes that tree.
    rules: logical name -> role (``"shared"``, ``"per_layer"``, ``"unpermuted"``); default :data:`FLAX_RULES`.
    overrides: leaf path (as ``jax.tree_util.keystr`` writes it) -> names, for leaves without an annotation.
    layers: ``"exact"`` or ``"tied"``, what the stacking axis ``layers`` of scanned layers is (see module docs).

    Raises ValueError naming a leaf with no (or too few) names, or a name the rules do not define.
    """
    if layers not in LAYERS_MODES:
        raise ValueError(f"layers must be one of {LAYERS_MODES}, got {layers!r}.")
    rules = dict(FLAX_RULES if rules is None else rules)
    bad = {k: v for k, v in rules.items() if v not in ROLES}
    if bad:
        raise ValueError(f"rules map names to one of {ROLES}; got {bad}.")
    overrides = dict(overrides or {})
    params, specs = _names_and_params(model_or_variables)
    flat_specs = dict((jax.tree_util.keystr(p), s) for p, s in
                      jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: x is None or isinstance(x, tuple))[0])

    def labels(path, leaf):
        name = jax.tree_util.keystr(path)
        names = overrides.pop(name, None) or flat_specs.get(name) or ()
        names = tuple(names)
        if len(names) != leaf.ndim:
            raise ValueError(f"params leaf {name} of shape {leaf.shape} has logical axis names {names or 'none'}; "
                             f"annotate it (with_partitioning / with_logical_partitioning) or pass it in overrides.")
        out = []
        stacked = LAYERS in names
        for n in names:
            if n is None:
                out.append(None)
                continue
            if n == LAYERS:
                out.append(LAYERS)
                continue
            if n not in rules:
                raise ValueError(f"params leaf {name} uses the logical name {n!r}, which the rules do not define; "
                                 f"they define {sorted(rules)}. Pass rules={{..., {n!r}: ROLE}}.")
            role = rules[n]
            if role == "unpermuted":
                out.append(None)
            elif role == "shared":
                out.append(n)
            else:
                scope = _layer_scope(path)
                scoped = f"{scope}/{n}" if scope else n
                out.append(Nested(scoped, LAYERS) if stacked else scoped)
        return tuple(out)

    label_tree = jax.tree_util.tree_map_with_path(labels, params)
    if overrides:
        raise ValueError(f"overrides name leaves the params lack: {sorted(overrides)}.")
    present = any(LAYERS in leaf for leaf in jax.tree.leaves(label_tree, is_leaf=lambda x: isinstance(x, tuple)))
    return from_labels(params, label_tree, fixed=(LAYERS,) if present and layers == "exact" else ())
