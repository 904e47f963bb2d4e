"""Embedded data: the standard-library text split by file, text-file loading, windows and digits."""

import jax
import numpy as np
import pytest

from hetnet import data


@pytest.fixture(scope="module")
def corpus():
    return data.stdlib_corpus(max_bytes=300_000)


def test_stdlib_corpus_is_deterministic_and_split(corpus):
    again = data.stdlib_corpus(max_bytes=300_000)
    np.testing.assert_array_equal(corpus.train, again.train)
    np.testing.assert_array_equal(corpus.valid, again.valid)
    assert corpus.train.dtype == np.uint8 and corpus.valid.size > 0
    assert corpus.valid.size < corpus.train.size
    assert b"def " in corpus.train.tobytes() and b"def " in corpus.valid.tobytes()


def test_split_is_by_file(corpus):
    assert corpus.train_files and corpus.valid_files
    assert not set(corpus.train_files) & set(corpus.valid_files)
    assert all(data._is_valid_file(f, 10) for f in corpus.valid_files)
    assert not any(data._is_valid_file(f, 10) for f in corpus.train_files)


def test_text_file_corpus(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello world\n" * 50)
    corpus = data.text_file_corpus(path, valid_fraction=0.2)
    assert corpus.train.size + corpus.valid.size == 600
    assert corpus.valid.size == 120


def test_missing_and_empty_text_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.text_file_corpus(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.txt.*is empty"):
        data.text_file_corpus(empty)


def test_sample_windows_are_contiguous_slices():
    tokens = np.arange(100, dtype=np.uint8)
    windows = np.asarray(jax.jit(data.sample_windows, static_argnums=(2, 3))(jax.random.key(0), tokens, 16, 9))
    assert windows.shape == (16, 9)
    np.testing.assert_array_equal(np.diff(windows, axis=1), 1)
    assert windows.max() < 100 and windows.min() >= 0


def test_digits_and_patches():
    train, valid = data.digits()
    assert train.images.shape[1:] == (8, 8) and len(train.labels) + len(valid.labels) == 1797
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    patches = data.to_patches(train.images[:3], 4)
    assert patches.shape == (3, 4, 16)
    np.testing.assert_array_equal(patches[:, 1].reshape(3, 4, 4), train.images[:3, :4, 4:])
    with pytest.raises(ValueError, match="patch"):
        data.to_patches(train.images[:3], 3)
