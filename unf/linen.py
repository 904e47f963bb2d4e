"""flax.linen wrappers of the weight-space layers, for models written as linen Modules."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from unf import layers
from unf.spec import WeightSpaceSpec


def _channels(x: Any) -> int:
    leaves = jax.tree.leaves(x)
    if not leaves:
        raise ValueError("x must hold at least one leaf of features [*leaf_shape, channels].")
    return leaves[0].shape[-1]


class EquivariantDense(nn.Module):
    """:class:`unf.layers.EquivariantLinear` as a linen Module; the input channel count is read from ``x``."""

    spec: WeightSpaceSpec
    features: int
    reduction: str = "mean"

    @nn.compact
    def __call__(self, x: Any) -> Any:
        layer = layers.cached_equivariant(self.spec, _channels(x), self.features, self.reduction)
        weights = self.param("weights", lambda key: layer.init(key)["weights"])
        return layer.apply({"weights": weights}, x)


class InvariantDense(nn.Module):
    """:class:`unf.layers.InvariantLinear` as a linen Module: features on the weight space -> ``[features]``."""

    spec: WeightSpaceSpec
    features: int
    reduction: str = "mean"

    @nn.compact
    def __call__(self, x: Any) -> jax.Array:
        layer = layers.cached_invariant(self.spec, _channels(x), self.features, self.reduction)
        weights = self.param("weights", lambda key: layer.init(key)["weights"])
        return layer.apply({"weights": weights}, x)
