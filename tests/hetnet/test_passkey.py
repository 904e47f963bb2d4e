"""Passkey rows: the needle sits where asked, the answer is the key, and accuracy is greedy reproduction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hetnet import passkey
from hetnet.config import TransformerConfig
from hetnet.models import TransformerLM

FILLER = np.frombuffer(b"abcdefghij" * 200, np.uint8)


def _text(row) -> str:
    return bytes(np.asarray(row, np.uint8)).decode()


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_the_needle_sits_at_its_depth_and_the_row_ends_with_the_key(depth):
    rows = passkey.make_batch(np.random.default_rng(0), FILLER, 3, 200, depth=depth)
    assert rows.tokens.shape == rows.answer.shape == (3, 201)
    room = 201 - passkey.overhead(5)
    for tokens, answer in zip(rows.tokens, rows.answer):
        text = _text(tokens)
        key = text[-5:]
        assert key.isdigit() and _text(tokens[answer]) == key
        assert text.endswith(passkey.QUESTION + key)
        assert text.index(passkey.NEEDLE.format(key=key)) == round(depth * room)


def test_random_depths_and_keys_differ_between_rows():
    rows = passkey.make_batch(np.random.default_rng(1), FILLER, 16, 300)
    assert len(set(rows.depth.round(6))) == 16
    assert len({_text(t[-5:]) for t in rows.tokens}) > 1


@pytest.mark.parametrize("kwargs,match", [({"length": 20}, "length 20 leaves no filler"),
                                          ({"depth": 1.5}, "depth must lie in"),
                                          ({"digits": 0}, "digits must be"),
                                          ({"filler": FILLER[:10]}, "filler must be")])
def test_bad_requests_are_named(kwargs, match):
    args = {"filler": FILLER, "batch": 2, "length": 200} | kwargs
    with pytest.raises(ValueError, match=match):
        passkey.make_batch(np.random.default_rng(0), args.pop("filler"), args.pop("batch"), args.pop("length"),
                           **args)


class _Oracle:
    """Logits that put all mass on the true next byte, except at answer positions listed in ``wrong``."""

    def __init__(self, tokens, wrong=()):
        self.tokens, self.wrong = tokens, wrong

    def apply(self, params, inputs):
        targets = np.array(self.tokens[:, 1:])
        for row, col in self.wrong:
            targets[row, col] = (targets[row, col] + 1) % 256
        return jax.nn.one_hot(targets, 256) * 10.0


def test_a_row_counts_only_when_every_digit_is_predicted():
    rows = passkey.make_batch(np.random.default_rng(2), FILLER, 4, 120)
    tokens, answer = jnp.asarray(rows.tokens), jnp.asarray(rows.answer)
    assert passkey.correct(_Oracle(rows.tokens), None, tokens, answer).tolist() == [True] * 4
    last = rows.tokens.shape[1] - 2
    wrong = _Oracle(rows.tokens, wrong=[(1, last), (3, 5)])  # row 1's last digit; row 3 off the answer
    assert passkey.correct(wrong, None, tokens, answer).tolist() == [True, False, True, True]


def test_the_loss_adds_the_answer_digits_to_the_language_model_loss():
    model = TransformerLM(TransformerConfig(d_model=16, num_heads=2, num_layers=1, max_len=128))
    params = model.init(jax.random.key(0))
    rows = passkey.make_batch(np.random.default_rng(3), FILLER, 2, 120)
    tokens, answer = jnp.asarray(rows.tokens), jnp.asarray(rows.answer)
    lm = model.loss(params, {"tokens": tokens})
    np.testing.assert_allclose(passkey.loss(model, params, tokens, answer, 0.0), lm, rtol=1e-6)
    log_p = jax.nn.log_softmax(model.apply(params, tokens[:, :-1]))
    digit_nll = -np.take_along_axis(np.asarray(log_p), np.asarray(tokens[:, 1:, None]), -1)[..., 0]
    want = lm + 2.0 * digit_nll[np.asarray(answer[:, 1:])].mean()
    np.testing.assert_allclose(passkey.loss(model, params, tokens, answer, 2.0), want, rtol=1e-5)


def test_an_answer_mask_of_another_shape_is_refused():
    rows = passkey.make_batch(np.random.default_rng(4), FILLER, 2, 120)
    with pytest.raises(AssertionError, match="shape"):
        passkey.correct(_Oracle(rows.tokens), None, jnp.asarray(rows.tokens), jnp.asarray(rows.answer[:, :-1]))
