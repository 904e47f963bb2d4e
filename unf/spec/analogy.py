"""Labels for leaves a spec lacks, read off a sibling leaf that plays the same part.

A rule that reads only each tensor's labels (which axes are widths, which a matrix's input and output), and holds no
coefficient per pair of leaves, can serve a model with leaves its spec never saw, as long as each new leaf's labels
are known: a SwiGLU gate ``w_gate`` is labelled like the ``w_in`` beside it (the same residual input, the same hidden
units), a LayerNorm offset ``bias`` like the ``scale`` beside it. :func:`extend_by_analogy` gives such a leaf its
sibling's labels and refuses, by name, any leaf that has neither labels nor such a sibling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from unf.spec.core import WeightSpaceSpec, from_labels

#: Leaf name -> the sibling whose labels it takes in the hetnet layout.
HETNET_ANALOGUES: Mapping[str, str] = {"w_gate": "w_in", "bias": "scale"}


def _is_box(key) -> bool:
    return isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value"


def _plain_key(key):
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return getattr(key, attr)
    raise TypeError(f"unsupported pytree path key {key!r}")


def extend_by_analogy(reference: WeightSpaceSpec, params: Any, analogues: Mapping[str, str]) -> WeightSpaceSpec:
    """Returns the spec of ``params`` (laid out as plain nested dicts, Flax variable boxes left out): a leaf at a path
    ``reference`` names keeps its labels; a leaf ``reference`` lacks whose last key ``k`` is in ``analogues`` takes
    the labels of its sibling ``analogues[k]`` in ``reference``, when their ranks agree.

    Raises ValueError naming every leaf that has neither, with the names ``reference`` has.
    """
    if not isinstance(reference, WeightSpaceSpec):
        raise TypeError(f"reference must be a WeightSpaceSpec, got {type(reference).__name__}.")
    if not isinstance(analogues, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in analogues.items()):
        raise TypeError(f"analogues must map leaf names to sibling names (str -> str, e.g. {dict(HETNET_ANALOGUES)}), "
                        f"got {analogues!r}.")
    by_name = dict(zip(reference.leaf_names, reference.leaf_axes))
    shapes: dict = {}
    labels: dict = {}
    unserved = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [_plain_key(k) for k in path if not _is_box(k)]
        name = "".join(f"[{k!r}]" for k in keys) or "<root>"
        own = by_name.get(name)
        if own is None and keys and keys[-1] in analogues:
            own = by_name.get("".join(f"[{k!r}]" for k in (*keys[:-1], analogues[keys[-1]])))
        if own is None or len(own) != np.ndim(leaf):
            unserved.append(name)
            continue
        shape_node, label_node = shapes, labels
        for k in keys[:-1]:
            shape_node, label_node = shape_node.setdefault(k, {}), label_node.setdefault(k, {})
        shape_node[keys[-1]] = jax.ShapeDtypeStruct(np.shape(leaf), np.float32)
        label_node[keys[-1]] = tuple(own)
    if unserved:
        kinds = ", ".join(f"{k!r} (labelled as its sibling {v!r})" for k, v in analogues.items())
        raise ValueError(f"params leaves {unserved} have no labels in this weight space and no sibling that lends "
                         f"its labels ({kinds}); the weight space names {list(reference.leaf_names)}.")
    present = {label for own in jax.tree.leaves(labels, is_leaf=lambda x: isinstance(x, tuple)) for label in own}
    return from_labels(shapes, labels, tuple(label for label in reference.fixed if label in present))
