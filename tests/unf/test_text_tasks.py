import jax
import numpy as np
import pytest

from unf.tasks import text, transformer_lm


def test_text_bytes_sizes_both_splits_and_names_itself_in_the_label():
    small = transformer_lm(d_model=8, layers=1, heads=2, seq=6, batch=2, text_bytes=200_000)
    default = transformer_lm(d_model=8, layers=1, heads=2, seq=6, batch=2)
    assert "text_bytes=200000" in small.label and "text_bytes" not in default.label
    corpus, full = text._corpus(200_000), text._corpus()
    assert len(corpus.train) < len(full.train) and len(corpus.valid) < len(full.valid)
    assert not set(corpus.train_files) & set(corpus.valid_files)
    batch = small.sample_batch(jax.random.key(0))["tokens"]
    assert batch.shape == (2, 7)
    # Every window the sampler draws is a piece of the smaller training split.
    train = corpus.train.tobytes()
    assert all(np.asarray(row, np.uint8).tobytes() in train for row in batch)


@pytest.mark.parametrize("bad", [0, -5, True, 1.5])
def test_a_bad_text_bytes_is_named(bad):
    with pytest.raises(ValueError, match=r"text_bytes must be a positive int .* got"):
        transformer_lm(d_model=8, layers=1, heads=2, seq=6, batch=2, text_bytes=bad)
