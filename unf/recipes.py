"""Named meta-training recipes: the task family, the learned optimizer and the budget that produce a shipped
optimizer, so ``unf-meta-train --recipe NAME`` reproduces it exactly."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Callable

from unf.lopt.adam_rules import EquivariantAdam, PerParameterAdam, mup_start, orthogonal_start
from unf.compare import HeldOut
from unf.meta.estimators import ESConfig
from unf.meta.train import MetaTrainConfig
from unf.tasks import Task, transformer_lm


KINDS = ("unf-adam", "unf-muon", "mlp-adam")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """train_tasks() -> the tasks meta-training samples from; learned(kind) -> the learned optimizer of that kind
    (``"unf-adam"``; ``"unf-muon"``, the same on Muon's orthogonalised direction for hidden matrices; or
    ``"mlp-adam"``, the per-parameter baseline); config: the budget;
    starts: per kind, the map from the optimizer's initial meta-params to meta-training's starting point (absent:
    start as Adam)."""

    name: str
    train_tasks: Callable[[], list[Task]]
    heldout: Callable[[], list[HeldOut]]
    config: MetaTrainConfig
    description: str
    starts: Mapping[str, Callable] = dataclasses.field(default_factory=dict)

    def start(self, kind: str) -> Callable | None:
        """Returns the map from the ``kind`` optimizer's initial meta-params to meta-training's starting point."""
        return self.starts.get(kind)

    def learned(self, kind: str = "unf-adam"):
        reference = self.train_tasks()[0]
        if kind == "unf-adam":
            return EquivariantAdam(reference.spec, layer_key="blocks")
        if kind == "unf-muon":
            return EquivariantAdam(reference.spec, layer_key="blocks", name="unf-muon", base="orthogonal")
        if kind == "mlp-adam":
            return PerParameterAdam(reference.spec, layer_key="blocks")
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")


def _transformer_tasks() -> list[Task]:
    """Byte-level TransformerLMs spread over width (8-64), depth (1-3), heads (2-4), grouped-query attention and
    sequence length, so no one shape can be what the rule keys its behaviour to."""
    return [
        transformer_lm(d_model=8, heads=2, seq=16, batch=8),
        transformer_lm(d_model=16, layers=2, heads=2, seq=16, batch=8),
        transformer_lm(d_model=16, heads=4, kv_heads=2, seq=32, batch=8),
        transformer_lm(d_model=24, layers=3, heads=3, seq=16, batch=8),
        transformer_lm(d_model=32, heads=4, seq=16, batch=8),
        transformer_lm(d_model=32, layers=2, heads=4, kv_heads=2, seq=16, batch=8),
        transformer_lm(d_model=64, heads=4, seq=16, batch=8),
    ]


def _transformer_heldout() -> list[HeldOut]:
    """Held-out tasks past the meta-training distribution (rungs of ``benchmarks.lopt_ladder``): wider, deeper,
    longer sequences and runs, grouped-query and linear attention."""
    base = dict(layers=2, heads=4, seq=64, batch=8)
    return [
        HeldOut("d64", transformer_lm(d_model=64, **base), 500),
        HeldOut("d128", transformer_lm(d_model=128, **base), 500),
        HeldOut("linear attention", transformer_lm(d_model=64, attention="linear", **base), 500),
        HeldOut("grouped-query attention", transformer_lm(d_model=64, kv_heads=2, **base), 500),
        HeldOut("8 layers", transformer_lm(d_model=32, **{**base, "layers": 8}), 500),
        HeldOut("2,000 steps", transformer_lm(d_model=32, **base), 2000),
    ]


RECIPES = {
    "transformer-lm": Recipe(
        name="transformer-lm",
        train_tasks=_transformer_tasks,
        heldout=_transformer_heldout,
        config=MetaTrainConfig(
            steps=500, meta_lr=1e-3, clip=1.0, checkpoint_every=100, seed=0,
            es=ESConfig(estimator="nres", num_particles=16, truncation=10, horizons=(100, 200, 500, 1000, 2000),
                        sigma=0.01, rescale=0.3, objective="valid"),
        ),
        description="byte-level TransformerLMs on the standard library's text (d_model 8-64, 1-3 layers, 2-4 heads, "
                    "grouped-query attention, sequence 16-32), runs of 100 to 2,000 steps, scored on held-out files; "
                    "starts from muP-scaled Adam (unf-adam) or from Muon's orthogonalised direction at Adam's RMS with "
                    "a warm-up + cosine schedule (unf-muon, the one that ships)",
        starts={"unf-adam": mup_start, "mlp-adam": mup_start, "unf-muon": orthogonal_start},
    ),
}


def recipe(name: str) -> Recipe:
    """Returns the recipe ``name`` (one of :data:`RECIPES`)."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {name!r}.")
    return RECIPES[name]
