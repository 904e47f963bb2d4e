"""Checking a learned optimizer's settings, and that meta-params belong to the optimizer they are handed to."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hetnet import validation
from unf.spec import WeightSpaceSpec


def check_like(meta_params: Any, expected: Any, kind: str) -> None:
    """Raises ValueError unless ``meta_params`` has the tree structure and leaf shapes of ``expected`` (the
    optimizer's own ``init_meta_params`` output, or its abstract shapes); ``kind`` names the optimizer."""
    want = jax.tree.map(jnp.shape, expected)
    try:
        got = jax.tree.map(jnp.shape, meta_params)
    except Exception as err:  # noqa: BLE001 - any unreadable tree is the same user error
        raise ValueError(f"meta_params are not a tree of arrays for {kind}: {err}") from err
    if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
        raise ValueError(
            f"meta_params do not fit {kind}: expected the tree {want}, got {got}. Meta-params of another learned "
            "optimizer kind, hidden width, or weight-space structure cannot be used here."
        )


def check_settings(spec: Any, hidden: Any, layer_key: Any = None, allow_no_spec: bool = False) -> None:
    """Raises naming the argument unless ``spec`` is a WeightSpaceSpec (or None where ``allow_no_spec``), ``hidden`` a
    positive int and ``layer_key`` None or a str: the settings every learned rule is built from."""
    if not (isinstance(spec, WeightSpaceSpec) or (allow_no_spec and spec is None)):
        accepted = "a WeightSpaceSpec or None" if allow_no_spec else "a WeightSpaceSpec"
        raise TypeError(f"spec must be {accepted} (unf.spec.from_hetnet, from_flax, from_labels, ...), got "
                        f"{type(spec).__name__}.")
    validation.positive_int("hidden", hidden, "the pointwise layers' width")
    if layer_key is not None and not isinstance(layer_key, str):
        raise TypeError(f"layer_key must be None or the str key of the params entry of stacked layers, got "
                        f"{layer_key!r}.")
