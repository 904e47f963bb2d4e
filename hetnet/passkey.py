"""Passkey retrieval: a random number hidden at a chosen depth of filler text, asked for at the end.

Each row of a batch reads, in bytes::

    <filler> The pass key is 48213. Remember it. 48213 is the pass key. <filler> What is the pass key? The pass key is 48213

with the needle starting at ``depth`` (0: the start, 1: as late as fits) of the filler, which is a window of real text
(so the rest of the row is ordinary language modelling). A model answers by predicting the final digits; it is
right on a row when its most likely next byte is the true digit at every answer position, which, since each
prediction sees the true digits before it, is the same as greedy decoding reproducing the key.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hetnet import validation

NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = " What is the pass key? The pass key is "


class PasskeyBatch(NamedTuple):
    """tokens: [batch, length + 1] int32 bytes; answer: [batch, length + 1] bool, True at the key's digits at the end;
    depth: [batch] float, where the needle starts as a fraction of the filler."""

    tokens: np.ndarray
    answer: np.ndarray
    depth: np.ndarray


def overhead(digits: int) -> int:
    """Returns the bytes a row spends on needle, question and answer with ``digits``-digit keys."""
    return len(NEEDLE.format(key="0" * digits)) + len(QUESTION) + digits


def make_batch(rng: np.random.Generator, filler: np.ndarray, batch: int, length: int, *,
               depth: float | None = None, digits: int = 5) -> PasskeyBatch:
    """Returns ``batch`` passkey rows of ``length + 1`` bytes (inputs and targets, as :meth:`TransformerLM.loss` reads).

    filler: [num_bytes] uint8 or int text the filler windows are cut from; depth: the needle's place in [0, 1], or
    None for a uniform draw per row; digits: the key's length.
    """
    digits, batch = validation.positive_int("digits", digits), validation.positive_int("batch", batch)
    if depth is not None and not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must lie in [0, 1] (or be None for random depths), got {depth!r}.")
    room = length + 1 - overhead(digits)
    if room < 1:
        raise ValueError(f"length {length} leaves no filler: a passkey row with {digits}-digit keys needs length "
                         f">= {overhead(digits)}.")
    filler = np.asarray(filler)
    if filler.ndim != 1 or filler.size < room:
        raise ValueError(f"filler must be 1-D text of at least {room} bytes for length {length}, got shape "
                         f"{filler.shape}.")
    tokens = np.empty((batch, length + 1), np.int32)
    answer = np.zeros((batch, length + 1), bool)
    depths = rng.uniform(size=batch) if depth is None else np.full(batch, float(depth))
    starts = rng.integers(0, filler.size - room + 1, size=batch)
    keys = rng.integers(0, 10, size=(batch, digits))
    for row in range(batch):
        key = "".join(map(str, keys[row]))
        needle = np.frombuffer(NEEDLE.format(key=key).encode(), np.uint8)
        tail = np.frombuffer((QUESTION + key).encode(), np.uint8)
        text = filler[starts[row]: starts[row] + room]
        cut = int(round(depths[row] * room))
        tokens[row] = np.concatenate([text[:cut], needle, text[cut:], tail])
        answer[row, -digits:] = True
    return PasskeyBatch(tokens, answer, depths)


def _check_rows(tokens, answer) -> None:
    # A mask of another shape would broadcast into a wrong answer loss rather than fail.
    chex.assert_rank(tokens, 2)
    chex.assert_equal_shape([tokens, answer])


def loss(model, params, tokens: jax.Array, answer: jax.Array, answer_weight: float = 1.0) -> jax.Array:
    """Returns the mean next-byte cross-entropy over the row plus ``answer_weight`` times its mean over the answer
    digits, which otherwise weigh a few bytes in thousands.

    model: a :class:`~hetnet.models.TransformerLM`; tokens, answer: [batch, length + 1] as :func:`make_batch` makes.
    """
    _check_rows(tokens, answer)
    logits = model.apply(params, tokens[:, :-1])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    weights = answer[:, 1:].astype(losses.dtype)
    answer_loss = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.mean(losses) + answer_weight * answer_loss


def correct(model, params, tokens: jax.Array, answer: jax.Array) -> jax.Array:
    """Returns per row whether the model's most likely next byte is right at every answer digit, [batch] bool."""
    _check_rows(tokens, answer)
    predicted = jnp.argmax(model.apply(params, tokens[:, :-1]), axis=-1)
    hits = (predicted == tokens[:, 1:]) | ~answer[:, 1:]
    return jnp.all(hits, axis=-1)
