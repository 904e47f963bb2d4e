"""Sharding from axis labels: a rule table maps each label's base name to a mesh axis (or None, replicated)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from hetnet.axes import base_label, is_axes_leaf

Rules = Mapping  # Mapping[str, str | None]: base label -> mesh axis name

TENSOR_PARALLEL_RULES: Rules = {
    "batch": "data",
    "heads": "model",
    "kv_heads": "model",
    "mlp": "model",
    "hs_heads": "model",
    "hs_atoms": "model",
    "embed": None,
    "vocab": None,
}


def auto_mesh(mesh: Mesh) -> Mesh:
    """Returns ``mesh`` with every axis of type ``Auto``.

    hetnet layers leave intermediate shardings to XLA's propagation; ``jax.make_mesh`` now defaults to ``Explicit``
    axes, under which gathers such as the embedding lookup would need hand-written output shardings.
    """
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def make_mesh(shape: tuple[int, ...], names: tuple[str, ...] = ("data", "model")) -> Mesh:
    """Returns a device mesh of ``shape`` with Auto axes named ``names``, e.g. ``make_mesh((2, 4))``."""
    if len(shape) != len(names):
        raise ValueError(f"shape {shape} and names {names} must have the same length.")
    if int(np.prod(shape)) > jax.device_count():
        raise ValueError(f"a mesh of shape {shape} needs {int(np.prod(shape))} devices; {jax.device_count()} exist.")
    return auto_mesh(jax.make_mesh(shape, names))


def partition_spec(labels: tuple, shape: tuple[int, ...], mesh: Mesh, rules: Rules) -> PartitionSpec:
    """Returns the PartitionSpec that ``rules`` give for an array of ``shape`` labelled ``labels``.

    An axis falls back to replication when its size is not divisible by the mesh axis, or when an earlier axis of
    the same array already uses that mesh axis (a mesh axis may shard one array axis only).
    """
    used: set[str] = set()
    entries = []
    for label, size in zip(labels, shape):
        mesh_axis = rules.get(base_label(label)) if label is not None else None
        if mesh_axis is not None and mesh_axis not in mesh.shape:
            raise ValueError(
                f"rules map label {label!r} to mesh axis {mesh_axis!r}, which the mesh lacks; "
                f"the mesh has axes {tuple(mesh.shape)}."
            )
        if mesh_axis is None or mesh_axis in used or size % mesh.shape[mesh_axis] != 0:
            entries.append(None)
        else:
            used.add(mesh_axis)
            entries.append(mesh_axis)
    return PartitionSpec(*entries)


def named_shardings(params: Any, axes: Any, mesh: Mesh, rules: Rules = TENSOR_PARALLEL_RULES) -> Any:
    """Returns a tree of ``NamedSharding`` with the structure of ``params``, one per leaf, from its labels."""
    mesh = auto_mesh(mesh)
    return jax.tree.map(
        lambda x, labels: NamedSharding(mesh, partition_spec(labels, np.shape(x), mesh, rules)), params, axes
    )


def batch_sharding(mesh: Mesh, rules: Rules = TENSOR_PARALLEL_RULES) -> NamedSharding:
    """Returns the sharding of ``[batch, ...]`` arrays: the batch axis over the mesh axis ``rules["batch"]``, the
    rest replicated."""
    data_axis = rules.get("batch")
    if data_axis is not None and data_axis not in mesh.shape:
        raise ValueError(f"rules map 'batch' to {data_axis!r}, which the mesh {tuple(mesh.shape)} lacks.")
    return NamedSharding(auto_mesh(mesh), PartitionSpec(data_axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """Returns the fully replicated sharding on ``mesh``."""
    return NamedSharding(auto_mesh(mesh), PartitionSpec())


__all__ = [
    "Rules",
    "auto_mesh",
    "make_mesh",
    "TENSOR_PARALLEL_RULES",
    "partition_spec",
    "named_shardings",
    "batch_sharding",
    "replicated",
    "is_axes_leaf",
]
