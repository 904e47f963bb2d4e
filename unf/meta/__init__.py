"""Meta-training learned optimizers with persistent evolution strategies."""

from unf.meta.pes import PESConfig, PESState, init_state, pes_step, unroll
from unf.meta.train import MetaTrainConfig, load_meta_params, meta_train, save_meta_params

__all__ = [
    "MetaTrainConfig",
    "PESConfig",
    "PESState",
    "init_state",
    "load_meta_params",
    "meta_train",
    "pes_step",
    "save_meta_params",
    "unroll",
]
