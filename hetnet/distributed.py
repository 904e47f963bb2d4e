"""Runs that span processes: joining a ``jax.distributed`` run, per-process data, global arrays, process-0 output.

One program runs in every process. :func:`initialize` joins the run before any computation: from the variables set by
the local launcher (``python -m hetnet.launch``), or, with ``auto=True``, from the cluster's own detection (SLURM,
Open MPI, Cloud TPU, ... as ``jax.distributed.initialize()`` finds them). After it, ``jax.devices()`` lists every
process's devices, so a mesh built from them spans the run, and a jitted step over that mesh runs in lockstep on all
processes. Each process then holds only its rows of a batch (:func:`process_rows`, :func:`global_batch`), and host
values that every process computed identically become replicated global arrays (:func:`replicated`).

On CPU the processes exchange collectives with gloo (``jax_cpu_collectives_implementation``).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

ENV_COORDINATOR = "HETNET_COORDINATOR"
ENV_NUM_PROCESSES = "HETNET_NUM_PROCESSES"
ENV_PROCESS_ID = "HETNET_PROCESS_ID"
ENV_CPU_DEVICES = "HETNET_CPU_DEVICES"


def _env_int(name: str) -> int:
    raw = os.environ[name]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def launched() -> bool:
    """Returns whether this process was started by :mod:`hetnet.launch` (its environment names a coordinator)."""
    return ENV_COORDINATOR in os.environ


def initialize(*, auto: bool = False) -> bool:
    """Joins the multi-process run this process belongs to, if any; returns whether the run has several processes.

    Reads the launcher's variables (``HETNET_COORDINATOR``, ``HETNET_NUM_PROCESSES``, ``HETNET_PROCESS_ID``,
    optionally ``HETNET_CPU_DEVICES`` virtual CPU devices per process). Without them, ``auto=True`` lets
    ``jax.distributed.initialize()`` detect the cluster, and ``auto=False`` leaves the run single-process. Must
    run before anything touches a device; calling it again is a no-op.
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if ENV_CPU_DEVICES in os.environ:
        jax.config.update("jax_num_cpu_devices", _env_int(ENV_CPU_DEVICES))
    if launched():
        num_processes, process_id = _env_int(ENV_NUM_PROCESSES), _env_int(ENV_PROCESS_ID)
        if not 0 <= process_id < num_processes:
            raise ValueError(f"{ENV_PROCESS_ID}={process_id} must lie in [0, {ENV_NUM_PROCESSES}={num_processes}).")
        if num_processes == 1:
            return False
        # Only the CPU backend reads this; accelerators use their own collectives.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(os.environ[ENV_COORDINATOR], num_processes, process_id)
        return True
    if auto:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            jax.distributed.initialize()
        except ValueError as err:
            raise ValueError(f"--distributed found no cluster to join (jax.distributed: {err}); on one machine, "
                             "start the processes with python -m hetnet.launch instead.") from err
        return jax.process_count() > 1
    return False


def device_description() -> str:
    """Returns the devices JAX runs on, e.g. ``cpu:cpu x1``, or ``... x4 over 2 processes``."""
    devices = jax.devices()
    where = f" over {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return f"{devices[0].platform}:{devices[0].device_kind} x{len(devices)}{where}"


def is_main() -> bool:
    """Returns whether this is process 0, the one that prints, logs and writes files other than checkpoints."""
    return jax.process_index() == 0


def main_print(*args, **kwargs) -> None:
    """``print`` from process 0 only."""
    if is_main():
        print(*args, **kwargs)


def process_rows(global_rows: int, process_index: int | None = None, process_count: int | None = None) -> slice:
    """Returns the rows ``[start, stop)`` of a global batch of ``global_rows`` that this process holds.

    Rows are split evenly and in order, matching how a batch sharded over a mesh whose devices are listed process
    by process lays out (``jax.devices()`` order); ``global_rows`` must divide by the number of processes.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if global_rows % count:
        raise ValueError(f"a global batch of {global_rows} rows does not split over {count} processes; use a "
                         f"multiple of {count}.")
    per = global_rows // count
    return slice(index * per, (index + 1) * per)


def global_batch(local: Any, sharding: NamedSharding) -> Any:
    """Returns global arrays sharded by ``sharding`` from this process's rows ``local`` (a tree of [rows, ...]).

    The global batch has ``rows * process_count`` rows; process ``p`` contributes rows ``process_rows(...)``.
    """
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def from_host(tree: Any, shardings: Any) -> Any:
    """Returns global arrays laid out by ``shardings`` (one sharding, or a tree matching ``tree``) from host values
    that every process holds in full and identically; each process keeps only its devices' parts. Typed PRNG keys
    stay keys."""
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)

    def one(x, sharding):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def replicated(tree: Any, mesh: Mesh) -> Any:
    """Returns ``tree`` as global arrays replicated over ``mesh``; every process must pass the same values."""
    return from_host(tree, NamedSharding(mesh, PartitionSpec()))


def to_host(tree: Any) -> Any:
    """Returns every leaf of ``tree`` (global arrays, possibly sharded across processes) as a full NumPy array on
    every process."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, jax.device_get(tree))
    return multihost_utils.process_allgather(tree, tiled=True)

