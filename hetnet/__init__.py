"""hetnet: transformer layers as pure functions over explicit, axis-labelled parameter pytrees."""

from hetnet import attention, axes, data, hyperset, sharding, symmetry, train
from hetnet.attention import Attention
from hetnet.attention_options import LinearOptions, NeutrenoOptions, SoftmaxOptions, SparseOptions
from hetnet.blocks import Block
from hetnet.classifier import SequenceClassifier
from hetnet.config import AttentionConfig, ClassifierConfig, FeedForwardConfig, NormConfig, TransformerConfig
from hetnet.feedforward import FeedForward
from hetnet.hyperset import HyperSET
from hetnet.models import Body, TransformerLM
from hetnet.norms import Norm

__all__ = [
    "Attention",
    "AttentionConfig",
    "Block",
    "Body",
    "FeedForward",
    "HyperSET",
    "LinearOptions",
    "NeutrenoOptions",
    "SoftmaxOptions",
    "SparseOptions",
    "Norm",
    "ClassifierConfig",
    "FeedForwardConfig",
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
