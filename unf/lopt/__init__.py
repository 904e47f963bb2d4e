"""Learned optimizers exposed as optax transformations."""

from unf.lopt.features import MOMENTUM_DECAYS, NUM_FEATURES, PROGRESS_TIMESCALES, parameter_features
from unf.lopt.learned import LearnedOptState, PerParameterMLP, SGDMomentum, UNFOptimizer, adam

__all__ = [
    "MOMENTUM_DECAYS",
    "NUM_FEATURES",
    "PROGRESS_TIMESCALES",
    "LearnedOptState",
    "PerParameterMLP",
    "SGDMomentum",
    "UNFOptimizer",
    "adam",
    "parameter_features",
]
