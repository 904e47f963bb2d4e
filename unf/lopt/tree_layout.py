"""How the learned rules read a params tree: leaf names with Flax's variable boxes left out, the spec's plain
layout of any tree with the same leaves (``nnx.State``, ``FrozenDict``, boxes), and which leaves are stacked layers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import jax
import numpy as np

from unf.spec import WeightSpaceSpec


def leaf_name(path: tuple) -> str:
    """Returns a leaf's readable path with Flax's variable boxes left out (``['l1']['kernel']`` whether the tree holds
    arrays or ``nnx.Param``s), the names specs use."""
    kept = tuple(k for k in path if not (isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value"))
    return jax.tree_util.keystr(kept) or "<root>"


def leaf_names(tree: Any) -> tuple[str, ...]:
    """Returns the :func:`leaf_name` of every leaf of ``tree``, in leaf order."""
    return tuple(leaf_name(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree))


def canonical(tree: Any, spec: WeightSpaceSpec | None) -> tuple[Any, Callable[[Any], Any]]:
    """Returns ``tree`` laid out as ``spec``'s plain nested dicts, and the map from a tree of that layout back to
    ``tree``'s own type (``nnx.State``, ``FrozenDict``, variable boxes), where the leaves' names match the spec's;
    else ``tree`` unchanged and the identity (the rule's checks then name what does not fit)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    if spec is None or treedef == spec.treedef or tuple(leaf_name(p) for p, _ in flat) != spec.leaf_names:
        return tree, lambda t: t
    return spec.unflatten([x for _, x in flat]), lambda t: treedef.unflatten(jax.tree.leaves(t))


def stacked_leaves(params: Any, layer_key: str | None) -> Any:
    """Returns a tree of bools like ``params``: True for the leaves under ``params[layer_key]``."""
    if layer_key is None:
        return jax.tree.map(lambda _: False, params)
    if not isinstance(params, Mapping) or layer_key not in params:
        raise ValueError(f"layer_key={layer_key!r}: params must be a mapping with a {layer_key!r} entry of stacked "
                         f"layers; got {type(params).__name__}"
                         + (f" with keys {sorted(params)}." if isinstance(params, Mapping) else "."))
    depths = {np.shape(leaf)[0] if np.ndim(leaf) else 0 for leaf in jax.tree.leaves(params[layer_key])}
    if len(depths) != 1 or 0 in depths:
        raise ValueError(f"layer_key={layer_key!r}: every leaf of params[{layer_key!r}] must lead with one layers "
                         f"axis; their leading sizes are {sorted(depths)}.")
    first = lambda path: getattr(path[0], "key", getattr(path[0], "name", None))  # noqa: E731
    return jax.tree_util.tree_map_with_path(lambda path, _: first(path) == layer_key, params)
