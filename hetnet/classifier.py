"""A sequence classifier bound to its config: a transformer :class:`~hetnet.models.Body`, mean pooling over real
tokens, a linear head. Frozen and hashable like the other models, so ``jax.jit(model.apply)`` works as it is."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from hetnet import embedding
from hetnet.compiled import compiled_init
from hetnet.config import ClassifierConfig
from hetnet.models import Body, check_config


@dataclasses.dataclass(frozen=True)
class SequenceClassifier:
    """A sequence classifier bound to ``cfg``: a :class:`Body`, mean pooling over real tokens, a linear head.

    Inputs are tokens [batch, seq], or features [batch, seq, input_dim] when ``cfg.input_dim`` is set.
    """

    cfg: ClassifierConfig

    def __post_init__(self):
        check_config("SequenceClassifier", self.cfg, ClassifierConfig)

    @property
    def body(self) -> Body:
        return Body(self.cfg.backbone)

    @compiled_init
    def init(self, key: jax.Array) -> dict:
        """Returns the model's params (arrays only)."""
        backbone = self.cfg.backbone
        k_in, k_body, k_head = jax.random.split(key, 3)
        params = self.body.init(k_body)
        if self.cfg.input_dim is None:
            params["tokens"] = embedding.init_tokens(k_in, backbone.vocab_size, backbone.d_model)
        else:
            params["inputs"] = embedding.init_dense(k_in, self.cfg.input_dim, backbone.d_model)
        params["head"] = embedding.init_dense(k_head, backbone.d_model, self.cfg.num_classes)
        return params

    @functools.cached_property
    def axes(self) -> dict:
        """The label tuple of every params axis, a tree with the structure of ``init``'s params."""
        axes = {**self.body.axes, "head": ("embed", "classes")}
        if self.cfg.input_dim is None:
            axes["tokens"] = embedding.TOKEN_AXES
        else:
            axes["inputs"] = (None, "embed")
        return axes

    def apply(self, params, inputs: jax.Array, *, padding_mask=None) -> jax.Array:
        """Returns class logits in float32 from the mean of the final states over real (unpadded) positions.

        inputs: [batch, seq] tokens, or [batch, seq, input_dim] features; padding_mask: [batch, seq] bool or None
        -> [batch, num_classes]
        """
        backbone = self.cfg.backbone
        dtype = jnp.dtype(backbone.dtype)
        if self.cfg.input_dim is None:
            embedding.check_tokens(inputs, backbone.vocab_size, "inputs")
            if inputs.ndim != 2:
                raise ValueError(f"inputs must be tokens of shape [batch, seq], got shape {tuple(inputs.shape)}.")
            x = embedding.embed_tokens(params["tokens"], inputs, dtype)
        else:
            if inputs.ndim != 3 or inputs.shape[-1] != self.cfg.input_dim:
                raise ValueError(f"inputs must have shape [batch, seq, input_dim={self.cfg.input_dim}], got "
                                 f"{tuple(inputs.shape)}.")
            x = inputs.astype(dtype) @ params["inputs"].astype(dtype)
        h = self.body.apply(params, x, padding_mask=padding_mask)
        if padding_mask is None:
            pooled = jnp.mean(h, axis=1)
        else:
            weights = padding_mask.astype(h.dtype)[..., None]
            pooled = jnp.sum(h * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1)
        return (pooled @ params["head"].astype(h.dtype)).astype(jnp.float32)

    def loss(self, params, batch: dict) -> jax.Array:
        """Returns the mean cross-entropy of class logits.

        batch["inputs"]: tokens or features as for :meth:`apply`; batch["labels"]: [batch] int in
        [0, num_classes); optional batch["mask"]: [batch, seq] bool.
        """
        logits, labels = self._logits_and_labels(params, batch)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return jnp.mean(jnp.where((labels < 0) | (labels >= self.cfg.num_classes), jnp.nan, losses))

    def accuracy(self, params, batch: dict) -> jax.Array:
        """Returns the fraction of examples whose arg-max logit is the label (batch as for :meth:`loss`)."""
        logits, labels = self._logits_and_labels(params, batch)
        hits = jnp.argmax(logits, axis=-1) == labels
        return jnp.mean(jnp.where((labels < 0) | (labels >= self.cfg.num_classes), jnp.nan, hits))

    def _logits_and_labels(self, params, batch: dict) -> tuple[jax.Array, jax.Array]:
        """Returns the class logits [batch, num_classes] and the labels [batch], checked against each other."""
        if not isinstance(batch, Mapping) or not {"inputs", "labels"} <= set(batch):
            given = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(f'batch must be a dict with "inputs" and "labels" (and optionally "mask"), got {given}.')
        labels = batch["labels"]
        embedding.check_tokens(labels, self.cfg.num_classes, 'batch["labels"]', "num_classes")
        logits = self.apply(params, batch["inputs"], padding_mask=batch.get("mask"))
        if jnp.shape(labels) != logits.shape[:1]:
            raise ValueError(f'batch["labels"] must have shape [batch] = {logits.shape[:1]} (one class per sequence), '
                             f"got shape {jnp.shape(labels)}.")
        return logits, labels
