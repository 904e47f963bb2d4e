"""The meta-training loop: ES meta-gradients, Adam on meta-params, orbax checkpoints, exact resumption.

Everything a run depends on (meta-params, meta-optimizer state, every population's inner states, the step) is in
one checkpointed tree, and each meta-step's randomness (its task and its noise) comes from ``(seed, step)``, so a run
killed and resumed from its last checkpoint follows exactly the trajectory of an uninterrupted one. The run's
settings are written beside the checkpoints (``run_config.json``); resuming with other settings is refused and the
differing settings are named.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from hetnet import distributed
from hetnet.checkpoints import open_run
from unf.meta import estimators
from unf.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """steps: meta-steps; meta_lr: Adam's learning rate; clip: meta-gradient global-norm clip;
    checkpoint_every: meta-steps between checkpoints; seed: the run's seed; es: the estimator's settings;
    keep_in_domain: after every meta-step, return the meta-params to their domain with the rule's
    ``project_meta_params`` (a decay at zero or above), where it has one. Off, a decay pushed below zero sits where
    the update clips it and ES sees no signal, so only noise brings it back; the ``transformer-lm`` recipe keeps it
    off because its shipped meta-params were made that way."""

    steps: int = 100
    meta_lr: float = 1e-3
    clip: float = 1.0
    checkpoint_every: int = 10
    seed: int = 0
    es: estimators.ESConfig = estimators.ESConfig()
    keep_in_domain: bool = True

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be positive, got {self.steps}.")
        if not isinstance(self.keep_in_domain, bool):
            raise TypeError(f"keep_in_domain must be True or False, got {self.keep_in_domain!r}.")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be positive, got {self.checkpoint_every}.")
        for name in ("meta_lr", "clip"):
            value = getattr(self, name)
            if not estimators.is_real_number(value) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")


def meta_optimizer(cfg: MetaTrainConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.clip), optax.adam(cfg.meta_lr))


def population_sharding(num_pairs: int) -> NamedSharding | None:
    """Returns a sharding of the pair axis over all devices, or None on one device (or when pairs don't divide)."""
    n = jax.device_count()
    if n == 1 or num_pairs % n:
        return None
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("population",))
    return NamedSharding(mesh, PartitionSpec("population"))


def make_step(task: Task, lopt, cfg: MetaTrainConfig, sharding: NamedSharding | None = None) -> Callable:
    """Returns a jitted ``step(key, meta_params, meta_opt_state, pes_state) -> (meta_params, meta_opt_state,
    pes_state, metrics)``, metrics an :class:`~unf.meta.estimators.ESMetrics`; with ``sharding`` the population's pair axis is split across devices."""
    opt = meta_optimizer(cfg)
    project = lopt.project_meta_params if cfg.keep_in_domain else (lambda meta_params: meta_params)

    def step(key, meta_params, meta_opt_state, state):
        grad, state, metrics = estimators.es_step(key, meta_params, state, task, lopt, cfg.es)
        updates, meta_opt_state = opt.update(grad, meta_opt_state, meta_params)
        metrics = metrics._replace(grad_norm=optax.tree.norm(grad))
        return project(optax.apply_updates(meta_params, updates)), meta_opt_state, state, metrics

    if sharding is None:
        return jax.jit(step)
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    return jax.jit(
        step,
        in_shardings=(replicated, replicated, replicated, sharding),
        out_shardings=(replicated, replicated, sharding, replicated),
    )


class MetaTrainState(NamedTuple):
    """Everything a meta-training run depends on, checkpointed as one tree: the meta-params, the meta-optimizer's
    state, one PES population per task and the meta-steps done (a scalar int32)."""

    meta_params: Any
    meta_opt_state: Any
    populations: list
    step: jax.Array


def place_state(state: MetaTrainState, sharding: NamedSharding | None) -> MetaTrainState:
    """Returns the run state with each population split by ``sharding`` (over every process's devices) and the rest
    replicated; unchanged without a sharding. Every process must hold the same ``state``."""
    if sharding is None:
        return state
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    shardings = MetaTrainState(*(jax.tree.map(lambda _, split=name == "populations": sharding if split else replicated,
                                              value)
                                 for name, value in zip(MetaTrainState._fields, state)))
    return distributed.from_host(state, shardings)


def serving(lopt, task: Task):
    """Returns the rule that trains ``task``: what ``lopt.serving(spec, params)`` names for the task's weight space
    (``lopt`` itself, or, for a rule without a learned correction, that rule over another architecture's labels)."""
    return lopt.serving(task.spec, jax.eval_shape(task.init, jax.random.key(0)))


def initial_state(lopt, tasks: Sequence[Task], rules: Sequence, cfg: MetaTrainConfig,
                  start: Callable[[Any], Any] | None = None) -> MetaTrainState:
    """Returns the run's full state: meta-params (``start`` applied to the optimizer's initial ones, when given),
    meta-optimizer state, one PES population per task (trained by its rule in ``rules``, :func:`serving`), step 0."""
    key = jax.random.key(cfg.seed)
    k_meta, k_pop = jax.random.split(key)
    meta_params = lopt.init_meta_params(k_meta)
    if start is not None:
        meta_params = start(meta_params)
    populations = [
        estimators.init_state(jax.random.fold_in(k_pop, i), task, rule, meta_params, cfg.es)
        for i, (task, rule) in enumerate(zip(tasks, rules))
    ]
    return MetaTrainState(meta_params, meta_optimizer(cfg).init(meta_params), populations, jnp.zeros((), jnp.int32))


def run_description(lopt, tasks: Sequence[Task], cfg: MetaTrainConfig) -> dict:
    """Returns the settings that determine a run's trajectory, as JSON-ready values."""
    description = {
        "optimizer": lopt.name, "hidden": lopt.hidden,
        "tasks": [t.label for t in tasks], "steps_planned": cfg.steps, "meta_lr": cfg.meta_lr, "clip": cfg.clip,
        "seed": cfg.seed, **{f"es.{k}": v for k, v in dataclasses.asdict(cfg.es).items()},
    }
    if cfg.keep_in_domain:  # runs made before the setting existed kept nothing in its domain, and resume as they were
        description["keep_in_domain"] = True
    return json.loads(json.dumps(description))  # as it reads back from run_config.json (tuples become lists)


def task_order(seed: int, step: int, num_tasks: int) -> int:
    """Returns the index of the task the meta-step ``step`` trains on: drawn uniformly, reproducibly from ``seed``."""
    return int(np.random.default_rng([seed, step]).integers(num_tasks))


def check_population_split(cfg: MetaTrainConfig) -> NamedSharding | None:
    """Returns the population's sharding (:func:`population_sharding`); raises ValueError when a multi-process run
    cannot split it."""
    sharding = population_sharding(cfg.es.num_pairs)
    if jax.process_count() > 1 and sharding is None:
        raise ValueError(f"a run over {jax.process_count()} processes splits the population over all "
                         f"{jax.device_count()} devices: es.num_pairs ({cfg.es.num_pairs}) must be a multiple of "
                         f"{jax.device_count()}.")
    return sharding


def log_meta_step(log, step: int, task: Task, metrics: estimators.ESMetrics, seconds: float) -> dict:
    """Writes meta-step ``step``'s record (``metrics`` on the host) to ``log`` and returns it; warns of dropped pairs and raises
    FloatingPointError when every pair diverged."""
    record = {"step": step, "task": task.label,
              **metrics.record(), "seconds": seconds}
    log.write(json.dumps(record) + "\n")
    log.flush()
    if record["dropped"] and distributed.is_main():
        tqdm.write(f"meta-step {step}: {int(record['dropped'])} pair(s) hit NaN/inf and were dropped "
                   "from the estimate; their inner runs restart.")
    if not math.isfinite(record["meta_loss"]):
        raise FloatingPointError(f"every pair diverged at meta-step {step}; lower --sigma or --meta-lr.")
    return record


def meta_train(
    lopt,
    tasks: Sequence[Task],
    cfg: MetaTrainConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    start: Callable[[Any], Any] | None = None,
) -> MetaTrainState:
    """Meta-trains ``lopt`` on ``tasks`` (one task drawn per meta-step) and returns the final run state. Each task
    is trained by :func:`serving`: a rule without a learned correction serves networks of other architectures than
    its own through their specs, so one set of meta-params can be meta-trained on all of them.

    Resumes from the newest checkpoint in ``out_dir/checkpoints`` when there is one, after checking the run's
    settings match. Writes ``metrics.jsonl`` (one line a meta-step, with its wall time) and a checkpoint every
    ``cfg.checkpoint_every`` steps and at the end. ``stop_after`` ends the call after that many meta-steps in total
    (for tests that simulate a killed run). ``start`` maps the optimizer's initial meta-params to the run's
    starting point (a prior such as :func:`unf.lopt.mup_start`).
    """
    if not tasks:
        raise ValueError("tasks must hold at least one task.")
    sharding = check_population_split(cfg)
    main = distributed.is_main()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    description = run_description(lopt, tasks, cfg)
    if start is not None:
        description["start"] = getattr(start, "__name__", repr(start))
    rules = [serving(lopt, task) for task in tasks]
    state = place_state(initial_state(lopt, tasks, rules, cfg, start), sharding)
    state, done, checkpoints = open_run(out, description, state, free=("steps_planned",), main=main)
    steps = [make_step(task, rule, cfg, sharding) for task, rule in zip(tasks, rules)]
    # In a multi-process run the key and step are replicated over the population's mesh.
    shared = (lambda x: x) if jax.process_count() == 1 else (lambda x: distributed.replicated(x, sharding.mesh))
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(range(done, end), initial=done, total=cfg.steps, disable=not (progress and main),
               desc="meta-train", unit="step")
    # Only process 0 writes the metrics; the others log to nowhere.
    with ((out / "metrics.jsonl").open("a") if main else open(os.devnull, "w")) as log:
        for i in bar:
            t = task_order(cfg.seed, i, len(tasks))
            tick = time.perf_counter()
            meta_params, meta_opt_state, population, metrics = steps[t](
                shared(jax.random.fold_in(jax.random.key(cfg.seed), i)), state.meta_params, state.meta_opt_state,
                state.populations[t])
            metrics = jax.device_get(metrics)  # waits for the step, so its wall time is complete
            populations = list(state.populations)
            populations[t] = population
            state = MetaTrainState(meta_params, meta_opt_state, populations,
                                   shared(jnp.asarray(i + 1, jnp.int32)))
            record = log_meta_step(log, i + 1, tasks[t], metrics, time.perf_counter() - tick)
            bar.set_postfix(meta_loss=f"{record['meta_loss']:.4f}", task=t)
            if (i + 1) % cfg.checkpoint_every == 0 or i + 1 == cfg.steps:
                checkpoints.save(i + 1, state)
    checkpoints.close()
    return state
