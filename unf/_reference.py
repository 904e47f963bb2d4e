"""The equivariant layer computed one basis term at a time with no shared work: the slow, obvious oracle that the
tests hold the fast layer to and that the layer benchmark times. Not part of the public API."""

from __future__ import annotations

from typing import Any

from unf import layers


def apply_term_by_term(layer: layers.EquivariantLinear, params: dict, x: Any) -> Any:
    """Returns what ``layer.apply(params, x)`` returns, one term at a time."""
    xs = layer._view.split(layers._check_features(layer.spec, x, layer.c_in))
    ys = layers._apply_term_by_term(layer.plan, params["weights"], xs, layer.reduction)
    return layer.spec.unflatten(layer._view.merge(ys))
