"""Meta-training learned optimizers with online evolution strategies (Noise-Reuse ES and Persistent ES)."""

from unf.meta.estimators import ESConfig, ESMetrics, ESState, es_step, init_state, unroll
from unf.meta.train import MetaTrainConfig, load_meta_params, meta_train, save_meta_params

__all__ = [
    "ESConfig",
    "ESMetrics",
    "ESState",
    "MetaTrainConfig",
    "es_step",
    "init_state",
    "load_meta_params",
    "meta_train",
    "save_meta_params",
    "unroll",
]
