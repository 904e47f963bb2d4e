"""Meta-training learned optimizers with online evolution strategies (Noise-Reuse ES and Persistent ES)."""

from unf.meta.estimators import ESConfig, ESMetrics, ESState, es_step, init_state, unroll
from unf.meta.export import load_meta_params, save_meta_params
from unf.meta.train import MetaTrainConfig, MetaTrainState, meta_train

__all__ = [
    "ESConfig",
    "ESMetrics",
    "ESState",
    "MetaTrainConfig",
    "MetaTrainState",
    "es_step",
    "init_state",
    "load_meta_params",
    "meta_train",
    "save_meta_params",
    "unroll",
]
