"""hetnet: transformer layers as pure functions over explicit, axis-labelled parameter pytrees."""

from hetnet import attention, axes, data, hyperset, sharding, symmetry, train
from hetnet.config import AttentionConfig, ClassifierConfig, FeedForwardConfig, NormConfig, TransformerConfig
from hetnet.models import Model, SequenceClassifier, TransformerLM

__all__ = [
    "AttentionConfig",
    "ClassifierConfig",
    "FeedForwardConfig",
    "Model",
    "NormConfig",
    "SequenceClassifier",
    "TransformerConfig",
    "TransformerLM",
    "attention",
    "axes",
    "data",
    "hyperset",
    "sharding",
    "symmetry",
    "train",
]
