"""Checks a spec against the model it describes: does acting on the params by each group change the function?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hetnet import symmetry, validation
from unf.spec.core import Label, WeightSpaceSpec


def _largest_change(reference: list, moved: list) -> float:
    scale = max(float(jnp.max(jnp.abs(r))) for r in reference) if reference else 0.0
    change = max((float(jnp.max(jnp.abs(m - r))) for r, m in zip(reference, moved)), default=0.0)
    return change / scale if scale > 0 else change


def check_symmetry(fn: Callable[..., Any], params: Any, spec: WeightSpaceSpec, *args: Any, key: jax.Array,
                   samples: int = 4) -> dict[Label, float]:
    """Returns, for every group of ``spec`` (each permuted label), the largest relative change of ``fn``'s output
    when ``params`` are acted on by ``samples`` uniformly random elements of that group alone:
    ``max |fn(g . params, *args) - fn(params, *args)| / max |fn(params, *args)|`` over the output's leaves.

    fn: ``fn(params, *args)`` returning an array or a pytree of arrays that the model's symmetry leaves unchanged
    (logits, a loss; not hidden states, which the group permutes). A spec is right when every value is at float
    rounding (~1e-6 in float32); a large value names a group that is not a symmetry of the model: a constant or
    buffer outside ``params`` (sinusoidal positions, BatchNorm statistics) that the group does not reach, a name
    given to two different axes, or a layer scope that splits or merges groups.

    Raises ValueError when ``params`` do not have the spec's structure or ``samples`` is not a positive int.
    """
    if not isinstance(spec, WeightSpaceSpec):
        raise TypeError(f"spec must be a WeightSpaceSpec (unf.spec.from_flax, from_hetnet, ...), got "
                        f"{type(spec).__name__}.")
    validation.positive_int("samples", samples, "group elements drawn per group")
    if not (isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                            or (key.dtype == jnp.uint32 and key.shape == (2,)))):
        raise TypeError(f"key must be a jax PRNG key (jax.random.key(0)), got {key!r}.")
    spec.leaves(params, "params")
    reference = [jnp.asarray(y) for y in jax.tree.leaves(fn(params, *args))]
    if not reference:
        raise ValueError("fn returned no arrays; it must return the model's output (an array or a pytree of them).")
    every = dict(spec.sizes)
    out = {}
    for label, k in zip(sorted(spec.permuted_sizes, key=repr), jax.random.split(key, len(spec.permuted_sizes))):
        worst = 0.0
        for k_sample in jax.random.split(k, samples):
            perms = symmetry.sample_from_sizes(k_sample, {label: every[label]}, every)
            moved = [jnp.asarray(y) for y in jax.tree.leaves(fn(spec.apply(perms, params), *args))]
            worst = max(worst, _largest_change(reference, moved))
        out[label] = float(np.float64(worst))
    return out
