"""Named meta-training recipes: the task family, the learned optimizer and the budget that produce a shipped
optimizer, so ``unf-meta-train --recipe NAME`` reproduces it exactly."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import jax

from unf.lopt.adam_rules import EquivariantAdam, PerParameterAdam, mup_start, orthogonal_start
from unf.compare import HeldOut
from unf.meta import export
from unf.meta.estimators import ESConfig
from unf.meta.train import MetaTrainConfig
from unf import spec as spec_lib
from unf.tasks import Task, cnn_digits, lstm_lm, mlp_digits, transformer_lm


KINDS = ("unf-adam", "unf-muon", "mlp-adam")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """train_tasks() -> the tasks meta-training samples from; learned(kind) -> the learned optimizer of that kind
    (``"unf-adam"``; ``"unf-muon"``, the same on Muon's orthogonalised direction for hidden matrices; or
    ``"mlp-adam"``, the per-parameter baseline); config: the budget;
    starts: per kind, the map from the optimizer's initial meta-params to meta-training's starting point (absent:
    start as Adam); labels_only: the tasks are of several architectures, which only a rule without a learned
    correction serves (each through its labels), so the recipe makes no other."""

    name: str
    train_tasks: Callable[[], list[Task]]
    heldout: Callable[[], list[HeldOut]]
    config: MetaTrainConfig
    description: str
    starts: Mapping[str, Callable] = dataclasses.field(default_factory=dict)
    labels_only: bool = False

    def start(self, kind: str) -> Callable | None:
        """Returns the map from the ``kind`` optimizer's initial meta-params to meta-training's starting point."""
        return self.starts.get(kind)

    def learned(self, kind: str = "unf-adam", correction: bool = True):
        """Returns the learned optimizer of ``kind``; ``correction=False`` leaves the equivariant correction out of
        the two equivariant kinds (the base direction with the learned schedule, decay and width factors)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
        if not isinstance(correction, bool) or (kind == "mlp-adam" and not correction):
            raise ValueError(f"correction must be True, or False for the kinds {KINDS[:2]}; got {correction!r} "
                             f"for {kind!r}.")
        if self.labels_only and (kind == "mlp-adam" or correction):
            raise ValueError(f"the recipe {self.name!r} meta-trains on several architectures, which a rule serves "
                             "through their labels only without a learned correction: use kind unf-muon or "
                             f"unf-adam with correction=False (--no-correction); got {kind!r}, "
                             f"correction={correction!r}.")
        reference = self.train_tasks()[0]
        if kind == "mlp-adam":
            return PerParameterAdam(reference.spec, layer_key="blocks")
        # The name goes into a run's settings, so a resume with the other setting is refused.
        name = kind if correction else f"{kind}-nocorrection"
        return EquivariantAdam(reference.spec, layer_key="blocks", name=name,
                               base="orthogonal" if kind == "unf-muon" else "adam", correction=correction)


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


def _network_tasks() -> list[Task]:
    """The transformer tasks and, each with the spec a user writes for it, MLPs and CNNs on the digits and byte-level
    LSTMs, all smaller than the networks of ``benchmarks.lopt_networks``, which the transformer rule never saw."""
    return _transformer_tasks() + [
        mlp_digits(width=32, depth=2).with_spec(spec_lib.mlp),
        mlp_digits(width=64, depth=3).with_spec(spec_lib.mlp),
        cnn_digits(channels=8).with_spec(spec_lib.cnn),
        cnn_digits(channels=4, batch=32).with_spec(spec_lib.cnn),
        lstm_lm(hidden=32, embed=16, seq=16, batch=16),
        lstm_lm(hidden=64, embed=16, seq=16, batch=8),
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


# The shipped transformer-lm meta-params were made before meta-training kept the decay at zero or above; with it
# kept there the same run ends elsewhere (decay 0.053 rather than 0.038), so that recipe reproduces the shipped run.
_TRANSFORMER_CONFIG = MetaTrainConfig(
    steps=500, meta_lr=1e-3, clip=1.0, checkpoint_every=100, seed=0,
    es=ESConfig(estimator="nres", num_particles=16, truncation=10, horizons=(100, 200, 500, 1000, 2000),
                sigma=0.01, rescale=0.3, objective="valid", progress_power=8.0),
    keep_in_domain=False,
)

RECIPES = {
    "transformer-lm": Recipe(
        name="transformer-lm",
        train_tasks=_transformer_tasks,
        heldout=_transformer_heldout,
        config=_TRANSFORMER_CONFIG,
        description="byte-level TransformerLMs on the standard library's text (d_model 8-64, 1-3 layers, 2-4 heads, "
                    "grouped-query attention, sequence 16-32), runs of 100 to 2,000 steps, scored on held-out files "
                    "with the end of each run weighted most (progress_power 8); "
                    "starts from muP-scaled Adam (unf-adam) or from Muon's orthogonalised direction at Adam's RMS with "
                    "a warm-up + cosine schedule (unf-muon, the one that ships)",
        starts={"unf-adam": mup_start, "mlp-adam": mup_start, "unf-muon": orthogonal_start},
    ),
    "networks": Recipe(
        name="networks",
        train_tasks=_network_tasks,
        heldout=_transformer_heldout,
        config=dataclasses.replace(_TRANSFORMER_CONFIG, keep_in_domain=True),
        description="the transformer-lm recipe's tasks and budget, with MLPs and CNNs on the digits and byte-level "
                    "LSTMs among the tasks (13 in all): the rule without its correction, served on each network "
                    "through its labels; starts as transformer-lm's",
        starts={"unf-adam": mup_start, "unf-muon": orthogonal_start},
        labels_only=True,
    ),
}


def recipe(name: str) -> Recipe:
    """Returns the recipe ``name`` (one of :data:`RECIPES`)."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {name!r}.")
    return RECIPES[name]


def load_export(folder: str | Path) -> tuple[Any, Any, dict]:
    """Returns ``(learned optimizer, meta_params, info)`` from a folder in the shipped format written by a recipe's
    meta-training (``unf-meta-train --recipe`` writes ``RUN/export``); the optimizer is rebuilt from ``info``'s
    recipe, kind and correction setting."""
    info = export.read_meta_info(folder)
    if "recipe" not in info:
        raise ValueError(f"{folder} holds meta-params of a task family's run (unf-meta-train --task), not of a "
                         "recipe; evaluate them with unf-eval --task.")
    learned = recipe(info["recipe"]).learned(info["kind"], info.get("correction", True))
    meta_params, _ = export.load_meta_params(folder, jax.eval_shape(learned.init_meta_params, jax.random.key(0)))
    return learned, meta_params, info
