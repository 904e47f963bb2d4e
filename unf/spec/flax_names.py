"""Weight-space specs from the logical axis names flax users already write for sharding.

``nnx.with_partitioning(init, ("embed", "mlp"))`` and ``nn.with_logical_partitioning(init, ("embed", "mlp"))`` name
every parameter axis. A rule table says what each name means for the network's symmetry:

- ``"shared"``: one permutation group for the whole model (the residual stream ``embed``);
- ``"per_layer"``: a group of one layer (MLP units, heads, head dims). In a model whose layers are separate modules
  the group is scoped by the layer's path: the first numbered component (``blocks/0``, ``layers_3``, ``Block_2``)
  whose numbered siblings all hold the same leaves under the same names. A numbered component whose siblings differ
  is a position inside a layer, not a layer (``nnx.Sequential``'s ``layers/0`` and ``layers/2``, the two Linears of
  one MLP), so it does not split the group; a model with one layer needs no number. On a tensor stacked over a
  ``"layers"`` axis (``nn.scan``, ``nnx.scan``) the group is :class:`hetnet.axes.Nested` in that axis: one
  independent permutation per layer index. An MLP's hidden layers are not layers in this sense: name each hidden
  axis (``hidden_1``, ``hidden_2``) and mark it ``"shared"``, or use :func:`unf.spec.mlp`;
- ``"unpermuted"``: named for sharding but not permuted (``vocab``); with ``io_as_groups=True`` each such name is a
  group of its own instead, as :func:`unf.spec.from_hetnet` does. The stacking axis ``layers`` is kept as a label:
  fixed (``layers="exact"``, the model's own symmetry) or a permuted group (``layers="tied"``).
- ``"unpermuted_width"``: not permuted, but growing with the width (:data:`unf.spec.UNPERMUTED_WIDTH`): a conv
  feature map flattened into a dense layer and the channels of the conv layer feeding it. Never a group, even with
  ``io_as_groups``: a flatten ties each channel to its positions, which no permutation of the channels alone keeps.

Names are read from each variable's own metadata, so a call inside ``nn.logical_axis_rules`` (which maps them to
mesh axes for sharding) sees the logical names. Only parameters are described: nnx ``nnx.Param`` variables, linen's
``params`` collection; other collections (BatchNorm statistics, caches) are not trained by an optimizer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax

from hetnet.axes import LAYERS, Nested
from unf.spec.core import LAYERS_MODES, UNPERMUTED_WIDTH, WeightSpaceSpec, from_labels

ROLES = ("shared", "per_layer", "unpermuted", "unpermuted_width")

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

# Common mesh axis names: a leaf annotated with these was partitioned by mesh axes, not logical names.
_MESH_AXES = frozenset({"model", "data", "fsdp", "tensor", "expert", "replica", "sequence", "stage", "pipeline"})
_NUMBERED = re.compile(r"^(\d+|.*_\d+)$")
_AUTONAMED = re.compile(r"^[A-Z]\w*_\d+$")
_METADATA_KEYS = ("out_sharding", "sharding_names", "sharding")


def key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _nnx_names(variable) -> tuple | None:
    metadata = variable.get_metadata() if hasattr(variable, "get_metadata") else getattr(variable, "metadata", {})
    for key in _METADATA_KEYS:
        names = metadata.get(key)
        if isinstance(names, (tuple, list)):
            return tuple(names)
    return None


def names_and_params(model_or_variables: Any) -> tuple[Any, Any]:
    """Returns ``(params, names)``: the pure params tree and, per leaf, a tuple of logical names or None."""
    from flax import nnx
    import flax.linen as nn

    if isinstance(model_or_variables, (nnx.Module, nnx.State)):
        state = nnx.state(model_or_variables, nnx.Param) if isinstance(model_or_variables, nnx.Module) \
            else model_or_variables
        is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
        others = sorted({type(v).__name__ for v in jax.tree.leaves(state, is_leaf=is_var)
                         if is_var(v) and not isinstance(v, nnx.Param)})
        if others:
            raise ValueError(f"model_or_variables holds non-parameter variables ({', '.join(others)}); a weight-space "
                             "spec describes what an optimizer trains: pass the model, or nnx.state(model, nnx.Param).")
        names = jax.tree.map(lambda v: _nnx_names(v) if is_var(v) else None, state, is_leaf=is_var)
        return nnx.to_pure_dict(state), nnx.to_pure_dict(names)
    if isinstance(model_or_variables, Mapping):
        collections = [k for k in model_or_variables if k != "params"]
        if "params" in model_or_variables and collections:
            raise ValueError(f"model_or_variables holds the collections {collections} besides 'params'; they are not "
                             "trained by an optimizer. Pass {'params': variables['params']} (the spec then has the "
                             "outer 'params' entry) or variables['params'].")
        boxed = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
        specs = jax.tree.map(lambda x: tuple(x.names) if isinstance(x, (nn.LogicallyPartitioned, nn.Partitioned))
                             else None, model_or_variables, is_leaf=boxed)
        return nn.unbox(model_or_variables), specs
    raise TypeError("model_or_variables must be an nnx Module or State, or linen variables (a dict from init); got "
                    f"{type(model_or_variables).__name__}.")


def layer_scopes(named_paths: list[tuple[tuple[str, ...], tuple]]) -> dict[tuple[str, ...], str]:
    """Returns each leaf path's layer scope (see the module docs): the path up to its first numbered component whose
    numbered siblings all hold the same leaves under the same names, or ``""``."""
    def signature(prefix: tuple[str, ...]) -> frozenset:
        n = len(prefix)
        return frozenset((p[n:], names) for p, names in named_paths if p[:n] == prefix)

    is_layer: dict[tuple[str, ...], bool] = {}
    for path, _ in named_paths:
        for i, name in enumerate(path[:-1]):
            prefix = path[: i + 1]
            if prefix in is_layer or not _NUMBERED.match(name):
                continue
            siblings = {p[: i + 1] for p, _ in named_paths
                        if len(p) > i + 1 and p[:i] == path[:i] and _NUMBERED.match(p[i])}
            is_layer[prefix] = len({signature(s) for s in siblings}) == 1
    scopes = {}
    for path, _ in named_paths:
        candidates = path[:-1]
        if candidates and _AUTONAMED.match(candidates[-1]):
            candidates = candidates[:-1]
        scopes[path] = next(("/".join(path[: i + 1]) for i in range(len(candidates))
                             if is_layer.get(path[: i + 1], False)), "")
    return scopes


def from_flax(model_or_variables: Any, rules: Mapping[str, str] | None = None,
              overrides: Mapping[str, tuple] | None = None, *, layers: str = "exact",
              io_as_groups: bool = False) -> WeightSpaceSpec:
    """Returns the spec of a flax model's params from its logical axis names.

    model_or_variables: an ``nnx.Module`` (its ``nnx.Param`` state) or ``nnx.State``, whose params are then
    ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``; or linen variables from ``init`` (boxed by
    ``nn.with_logical_partitioning``; ``{'params': ...}``, or the params alone), whose params are
    ``nn.unbox(variables)``. The spec describes that tree.
    rules: logical name -> role (``"shared"``, ``"per_layer"``, ``"unpermuted"``, ``"unpermuted_width"``); default
    :data:`FLAX_RULES`.
    overrides: leaf path (as ``jax.tree_util.keystr`` writes it) -> names, for leaves without an annotation.
    layers: ``"exact"`` or ``"tied"``, what the stacking axis ``layers`` of scanned layers is (see module docs).
    io_as_groups: make every ``"unpermuted"`` name (``vocab``) a group of its own instead of an unpermuted axis.

    Raises ValueError listing every leaf with no (or too few) names and every name the rules do not define.
    The spec is only as right as the names: verify it on the model with :func:`unf.spec.check_symmetry`.
    """
    if layers not in LAYERS_MODES:
        raise ValueError(f"layers must be one of {LAYERS_MODES}, got {layers!r}.")
    rules = dict(FLAX_RULES if rules is None else rules)
    bad = {k: v for k, v in rules.items() if v not in ROLES}
    if bad:
        raise ValueError(f"rules map names to one of {ROLES}; got {bad}.")
    overrides = dict(overrides or {})
    params, specs = names_and_params(model_or_variables)
    flat_specs = dict((jax.tree_util.keystr(p), s) for p, s in
                      jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: x is None or isinstance(x, tuple))[0])
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    named = []
    unlabelled, unknown = [], {}
    for path, leaf in flat:
        name = jax.tree_util.keystr(path)
        names = tuple(overrides.pop(name, None) or flat_specs.get(name) or ())
        if len(names) != leaf.ndim:
            unlabelled.append(f"{name} {tuple(leaf.shape)}: {names or 'none'}")
        for n in names:
            if n is not None and n != LAYERS and n not in rules:
                unknown.setdefault(n, name)
        named.append((tuple(key_name(e) for e in path), names))
    if overrides:
        raise ValueError(f"overrides name leaves the params lack: {sorted(overrides)}.")
    if unlabelled or unknown:
        raise ValueError(_naming_error(unlabelled, unknown, rules))
    scopes = layer_scopes(named)

    def labels(path_names: tuple[str, ...], names: tuple) -> tuple:
        stacked = LAYERS in names
        out = []
        for n in names:
            role = rules.get(n) if n not in (None, LAYERS) else None
            if n == LAYERS:
                out.append(LAYERS)
            elif role == "unpermuted_width":
                out.append(UNPERMUTED_WIDTH)
            elif role is None or (role == "unpermuted" and not io_as_groups):
                out.append(None)
            elif role in ("shared", "unpermuted"):
                out.append(n)
            else:
                scoped = f"{scopes[path_names]}/{n}" if scopes[path_names] else n
                out.append(Nested(scoped, LAYERS) if stacked else scoped)
        return tuple(out)

    label_tree = jax.tree.unflatten(jax.tree.structure(params), [labels(p, names) for p, names in named])
    present = any(LAYERS in names for _, names in named)
    spec = from_labels(params, label_tree, fixed=(LAYERS,) if present and layers == "exact" else ())
    # Flax's layers add a bias and multiply a norm's scale, never contract them: a [heads, head_dim] bias is no
    # matrix, whatever its names. An nnx model's dense and conv kernels contract the axes their layer's type says;
    # every other leaf's fan-in is left to its names' order.
    kernels = _nnx_kernel_fan_in(model_or_variables)
    fan_in = []
    for (path, names), shape in zip(named, spec.leaf_shapes):
        contracted = kernels.get(path)
        if contracted is not None and len(shape) == contracted[1] + (names[:1] == (LAYERS,)):
            shift = len(shape) - contracted[1]  # a stacking axis ahead of a scanned layer's kernel
            fan_in.append(tuple(i + shift for i in contracted[0]))
        else:
            fan_in.append(() if path and path[-1] in _NEVER_CONTRACTED else None)
    fan_in = tuple(fan_in)
    return dataclasses.replace(spec, fan_in=fan_in) if any(f is not None for f in fan_in) else spec


_NEVER_CONTRACTED = frozenset({"bias", "scale"})


def _nnx_kernel_fan_in(model: Any) -> dict[tuple[str, ...], tuple[tuple[int, ...], int]]:
    """Returns ``{kernel path: (fan-in axes, kernel rank)}`` for the dense and conv layers of an nnx Module (none for
    anything else): ``nnx.Linear``, ``nnx.Conv`` and ``nnx.ConvTranspose`` contract every kernel axis but the last,
    ``nnx.LinearGeneral`` (``nnx.MultiHeadAttention``'s projections) its ``in_features`` axes after its batch
    axes, ``nnx.Einsum`` the kernel axes its ``einsum_str`` shares with the input and not with the output."""
    from flax import nnx

    if not isinstance(model, nnx.Module):
        return {}
    out = {}
    for path, module in nnx_modules(model):
        key = tuple(str(k) for k in path) + ("kernel",)
        if isinstance(module, (nnx.Conv, nnx.ConvTranspose)):
            rank = len(module.kernel_shape)
            out[key] = (tuple(range(rank - 1)), rank)
        elif isinstance(module, nnx.Linear):
            out[key] = ((0,), 2)
        elif isinstance(module, nnx.LinearGeneral):
            n_batch, n_in = len(module.batch_axis), len(module.in_features)
            out[key] = (tuple(range(n_batch, n_batch + n_in)), n_batch + n_in + len(module.out_features))
        elif isinstance(module, nnx.Einsum):
            contracted = _einsum_fan_in(module.einsum_str)
            if contracted is not None:
                out[key] = (contracted, len(module.kernel_shape))
    return out


def nnx_modules(model: Any):
    """Returns an iterator of ``(path, module)`` over an nnx Module and its submodules."""
    from flax import nnx

    # nnx.iter_modules replaced the Module method in later Flax releases.
    return nnx.iter_modules(model) if hasattr(nnx, "iter_modules") else model.iter_modules()


def _einsum_fan_in(einsum_str: str) -> tuple[int, ...] | None:
    """Returns the kernel axes an ``nnx.Einsum``'s ``"inputs,kernel->out"`` contracts with its input (in both
    operands, not in the output); None for a string of another form (ellipses, more operands)."""
    spec = einsum_str.replace(" ", "")
    if "..." in spec or spec.count("->") != 1 or spec.count(",") != 1:
        return None
    operands, result = spec.split("->")
    inputs, kernel = operands.split(",")
    return tuple(i for i, letter in enumerate(kernel) if letter in inputs and letter not in result)


def _naming_error(unlabelled: list[str], unknown: dict[str, str], rules: Mapping[str, str]) -> str:
    lines = []
    if unlabelled:
        lines.append(f"{len(unlabelled)} params leaves lack a logical name per axis (path (shape): names):\n  "
                     + "\n  ".join(unlabelled)
                     + "\nAnnotate them (nnx.with_partitioning / nn.with_logical_partitioning, or the Param's "
                       "out_sharding) or pass overrides={path: names}.")
    if unknown:
        listed = ", ".join(f"{n!r} (on {leaf})" for n, leaf in unknown.items())
        lines.append(f"The rules do not define the logical names {listed}; they define {sorted(rules)}. Pass "
                     "rules={..., NAME: ROLE} with ROLE one of " + f"{ROLES}.")
        mesh = sorted(n for n in unknown if str(n) in _MESH_AXES)
        if mesh:
            lines.append(f"{mesh} look like mesh axes: these leaves were partitioned by mesh axis names, which say "
                         "how to shard, not which axes share a permutation. Name the axes logically (embed, mlp, "
                         "heads, kv, vocab) and map them to the mesh with nn.logical_axis_rules.")
    return "from_flax: " + "\n".join(lines)
