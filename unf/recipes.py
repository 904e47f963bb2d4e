"""Named meta-training recipes: the task family, the learned optimizer and the budget that produce a shipped
optimizer, so ``unf-meta-train --recipe NAME`` reproduces it exactly."""

from __future__ import annotations

import dataclasses
from typing import Callable

from unf import lopt
from unf.compare import HeldOut
from unf.meta.estimators import ESConfig
from unf.meta.train import MetaTrainConfig
from unf.tasks import Task, transformer_lm


@dataclasses.dataclass(frozen=True)
class Recipe:
    """train_tasks() -> the tasks meta-training samples from; learned(kind) -> the learned optimizer of that kind
    (``"unf-adam"``, the one that ships, or ``"mlp-adam"``, its per-parameter baseline); config: the budget."""

    name: str
    train_tasks: Callable[[], list[Task]]
    heldout: Callable[[], list[HeldOut]]
    config: MetaTrainConfig
    description: str

    def learned(self, kind: str = "unf-adam"):
        reference = self.train_tasks()[0]
        if kind == "unf-adam":
            return lopt.EquivariantAdam(reference.spec, layer_key="blocks")
        if kind == "mlp-adam":
            return lopt.PerParameterAdam(layer_key="blocks")
        raise ValueError(f"kind must be 'unf-adam' or 'mlp-adam', got {kind!r}.")


def _transformer_tasks() -> list[Task]:
    return [
        transformer_lm(d_model=16, heads=2, seq=16, batch=8),
        transformer_lm(d_model=8, heads=2, seq=16, batch=8),
        transformer_lm(d_model=16, heads=2, seq=8, batch=16),
    ]


def _transformer_heldout() -> list[HeldOut]:
    """Five held-out tasks, each changing one thing from the meta-training tasks (d_model 8-16, one block, 2 heads,
    sequence 8-16, softmax attention, runs of at most 400 steps)."""
    return [
        HeldOut("2x width", transformer_lm(d_model=32, heads=2, seq=16, batch=8), 200),
        HeldOut("linear attention", transformer_lm(d_model=16, heads=2, seq=16, batch=8, attention="linear"), 200),
        HeldOut("2x sequence", transformer_lm(d_model=16, heads=2, seq=32, batch=8), 200),
        HeldOut("2x depth", transformer_lm(d_model=16, layers=2, heads=2, seq=16, batch=8), 200),
        HeldOut("4x horizon", transformer_lm(d_model=16, heads=2, seq=16, batch=8), 1600),
    ]


RECIPES = {
    "transformer-lm": Recipe(
        name="transformer-lm",
        train_tasks=_transformer_tasks,
        heldout=_transformer_heldout,
        config=MetaTrainConfig(
            steps=12_000, meta_lr=1e-3, clip=1.0, checkpoint_every=250, seed=0,
            es=ESConfig(estimator="nres", num_particles=16, truncation=10, horizons=(100, 200, 400), sigma=0.01,
                        rescale=0.3),
        ),
        description="one-block byte-level TransformerLMs on the standard library's text (d_model 8-16, 2 heads, "
                    "sequence 8-16, softmax attention), runs of 100, 200 or 400 steps",
    ),
}


def recipe(name: str) -> Recipe:
    """Returns the recipe ``name`` (one of :data:`RECIPES`)."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {name!r}.")
    return RECIPES[name]
