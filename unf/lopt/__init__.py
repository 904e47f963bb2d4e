"""Learned optimizers exposed as optax transformations.

:class:`EquivariantAdam` (the default: Adam plus a learned UNF correction, exactly Adam at initialisation) and its
per-parameter baseline :class:`PerParameterAdam`; the UNF paper's rule (:class:`UNFOptimizer`, :class:`PerParameterMLP`,
:class:`SGDMomentum`) for the paper's reproduction; :func:`pretrained` for the meta-params that ship with the package.
"""

from unf.lopt.features import MOMENTUM_DECAYS, NUM_FEATURES, PROGRESS_TIMESCALES, parameter_features
from unf.lopt.learned import LearnedOptState, PerParameterMLP, SGDMomentum, UNFOptimizer
from unf.lopt.adam_rules import EquivariantAdam, LabelRule, PerParameterAdam, mup_start, orthogonal_start
from unf.lopt.factories import equivariant_adam, per_parameter_adam
from unf.lopt.learned_adam import LearnedAdamState
from unf.lopt.protocol import LearnedOptimizer
from unf.lopt.shipped import available, load_pretrained, pretrained
from unf.lopt.width import role_mask


__all__ = [
    "MOMENTUM_DECAYS",
    "NUM_FEATURES",
    "PROGRESS_TIMESCALES",
    "EquivariantAdam",
    "LabelRule",
    "LearnedAdamState",
    "LearnedOptState",
    "LearnedOptimizer",
    "PerParameterAdam",
    "PerParameterMLP",
    "SGDMomentum",
    "UNFOptimizer",
    "available",
    "equivariant_adam",
    "per_parameter_adam",
    "load_pretrained",
    "mup_start",
    "orthogonal_start",
    "parameter_features",
    "pretrained",
    "role_mask",
]
