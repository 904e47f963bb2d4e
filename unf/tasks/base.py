"""A task bundles init, loss, a jit-able batch sampler and the weight-space spec; a family names its variants."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from unf.spec import WeightSpaceSpec


@dataclasses.dataclass(frozen=True)
class Task:
    """One inner training problem.

    init(key) -> params; loss(params, batch) -> scalar; sample_batch(key) -> batch (pure, jit- and vmap-able);
    spec: the weight space of ``params`` for equivariant optimizers; config: the settings that made it;
    sample_valid_batch(key) -> a batch of held-out data (None where the task has no held-out split).
    """

    name: str
    config: tuple
    init: Callable[[jax.Array], Any]
    loss: Callable[[Any, Any], jax.Array]
    sample_batch: Callable[[jax.Array], Any]
    spec: WeightSpaceSpec
    sample_valid_batch: Callable[[jax.Array], Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.config) + ")"

    def with_spec(self, make_spec: Callable[[Any], WeightSpaceSpec]) -> "Task":
        """Returns this task with the spec ``make_spec(params)`` writes for its params (abstract shapes), such as the
        one a user writes (``unf.spec.mlp``, ``unf.spec.cnn``: the network's input and output axes unpermuted)."""
        return dataclasses.replace(self, spec=make_spec(jax.eval_shape(self.init, jax.random.key(0))))


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """Variants of one task: ``make(**config) -> Task``; meta-training samples ``train_configs``; evaluation uses
    ``eval_configs`` (held out: other widths, always fresh seeds), including one twice as wide as any seen."""

    name: str
    make: Callable[..., Task]
    train_configs: tuple[dict, ...]
    eval_configs: tuple[dict, ...]

    def train_tasks(self) -> list[Task]:
        return [self.make(**c) for c in self.train_configs]

    def eval_tasks(self) -> list[Task]:
        return [self.make(**c) for c in self.eval_configs]
