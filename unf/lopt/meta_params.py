"""Checking that meta-params belong to the learned optimizer they are handed to."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


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
