"""One-call optax factories for the learned Adam rules, shaped like ``optax.adam``.

    tx = unf.lopt.equivariant_adam(spec)                       # fresh meta-params: exactly optax.adam(1e-3)
    tx = unf.lopt.equivariant_adam(spec, meta_params, total_steps=2000)
    tx = unf.lopt.per_parameter_adam(learning_rate=3e-4)        # no spec needed

Each returns an ``optax.GradientTransformationExtraArgs`` whose ``update`` needs ``params`` (the rule reads the
weights). ``total_steps`` is needed only where something reads training progress: trained meta-params (their
features) or the learned schedule; with fresh meta-params and a ``learning_rate`` it may be left out.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from unf.lopt.adam_rules import EquivariantAdam, PerParameterAdam
from unf.lopt.learned_adam import HIDDEN, ScalarOrSchedule
from unf.spec import WeightSpaceSpec

# Fresh meta-params emit no correction and a constant schedule, so the run length they are told changes nothing.
_ANY_LENGTH = 1


def _build(learned, meta_params: Any, learning_rate: ScalarOrSchedule | None, total_steps: int | None):
    if isinstance(meta_params, WeightSpaceSpec):
        raise TypeError("meta_params must be trained meta-params (a dict of arrays) or None, got a WeightSpaceSpec; "
                        "per_parameter_adam takes its spec by keyword: per_parameter_adam(spec=spec).")
    fresh = meta_params is None
    if fresh:
        # Made concretely even inside a jit (a sharded model's create function): a traced value held by the
        # transformation would escape into the next jit that runs it.
        with jax.ensure_compile_time_eval():
            meta_params = learned.init_meta_params(jax.random.key(0))
    if total_steps is None:
        if not fresh:
            raise ValueError("total_steps is required with trained meta_params: the rule reads training progress "
                             "(step / total_steps); pass the length of the run.")
        total_steps = _ANY_LENGTH
    return learned.opt_fn(meta_params, total_steps=total_steps, learning_rate=learning_rate)


def equivariant_adam(spec: WeightSpaceSpec, meta_params: Any = None, *, learning_rate: ScalarOrSchedule | None = None,
                     total_steps: int | None = None, layer_key: str | None = None,
                     hidden: int = HIDDEN, base: str = "adam") -> optax.GradientTransformationExtraArgs:
    """Returns Adam plus the learned UNF correction over ``spec`` (:class:`unf.lopt.EquivariantAdam`; ``base=
    "orthogonal"`` starts hidden matrices from Muon's orthogonalised momentum instead of Adam's direction).

    meta_params: trained meta-params (from :func:`unf.lopt.load_pretrained` or meta-training), or None for fresh ones
    at which the rule is exactly ``optax.adam(learning_rate or 1e-3)``; learning_rate: None for the learned schedule,
    else a float or optax schedule; total_steps: the run's length (see the module docstring); layer_key: the params
    entry of stacked layers (``"blocks"`` for hetnet models).
    """
    return _build(EquivariantAdam(spec, hidden=hidden, layer_key=layer_key, base=base), meta_params, learning_rate,
                  total_steps)


def per_parameter_adam(meta_params: Any = None, *, spec: WeightSpaceSpec | None = None,
                       learning_rate: ScalarOrSchedule | None = None, total_steps: int | None = None,
                       layer_key: str | None = None,
                       hidden: int = HIDDEN) -> optax.GradientTransformationExtraArgs:
    """Returns Adam plus a learned per-parameter correction (:class:`unf.lopt.PerParameterAdam`); ``spec`` (optional)
    supplies the labels its muP width factors are read from. Arguments as in :func:`equivariant_adam`."""
    return _build(PerParameterAdam(spec, hidden=hidden, layer_key=layer_key), meta_params, learning_rate,
                  total_steps)
