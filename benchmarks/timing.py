"""Side-by-side timing and compiled-memory measurement for benchmarks."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable

import jax
import optax

from hetnet import distributed
from hetnet.train import inner_step


def device_description() -> str:
    """Returns a one-line description of the JAX devices, the host's processor and the jax version."""
    return f"{distributed.device_description()} ({platform.processor() or platform.machine()}, jax {jax.__version__})"


def compiled_memory_bytes(jitted: Callable, *args) -> int:
    """Returns XLA's peak-memory estimate of one call: arguments + outputs + temporaries - donated aliases."""
    analysis = jitted.lower(*args).compile().memory_analysis()
    if analysis is None:
        return -1
    return int(
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
        - analysis.alias_size_in_bytes
    )


def _block(tree: Any) -> None:
    jax.block_until_ready(tree)


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 20, warmup: int = 2) -> dict[str, dict]:
    """Returns per-name timing statistics (seconds) of zero-argument calls, run round-robin so drift hits all alike.

    Each entry: ``{"median": s, "min": s, "samples": [s, ...]}``.
    """
    for _ in range(warmup):
        for fn in fns.values():
            _block(fn())
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            _block(fn())
            samples[name].append(time.perf_counter() - start)
    return {
        name: {"median": statistics.median(s), "min": min(s), "samples": s} for name, s in samples.items()
    }


def optimizer_step_times(task, optimizers: dict, repeats: int) -> dict[str, dict]:
    """Returns :func:`time_interleaved` statistics of one jitted training step of ``task`` (a fixed batch, the same
    params) under each optax transformation in ``optimizers``."""
    params = task.init(jax.random.key(0))
    batch = task.sample_batch(jax.random.key(1))
    fns = {}
    for name, opt in optimizers.items():
        opt = optax.with_extra_args_support(opt)
        jitted = jax.jit(lambda p, s, opt=opt: inner_step(task.loss, opt, p, s, batch)[:2])
        fns[name] = lambda f=jitted, s=opt.init(params): f(params, s)
    return time_interleaved(fns, repeats=repeats)
