"""Embedded default data and loaders that take a path; nothing is downloaded.

- text: the running interpreter's own standard-library source, as bytes (byte-level tokens, vocabulary 256), split
  into train and validation by file so no file straddles the split;
- any text file: :func:`text_file_corpus`;
- images: scikit-learn's bundled 8x8 digits, optionally cut into patch sequences.
"""

from __future__ import annotations

import dataclasses
import os
import sysconfig
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

BYTE_VOCAB = 256


@dataclasses.dataclass(frozen=True)
class TextCorpus:
    """Byte tokens for training and validation. train, valid: [num_tokens] uint8.

    ``train_files`` and ``valid_files`` name the source files of each split, where the corpus came from files.
    """

    train: np.ndarray
    valid: np.ndarray
    source: str
    train_files: tuple[str, ...] = ()
    valid_files: tuple[str, ...] = ()
    vocab_size: int = BYTE_VOCAB


def _is_valid_file(relative: str, valid_every: int) -> bool:
    # crc32 rather than hash(): Python salts str hashes per process, and the split must not move between runs.
    return zlib.crc32(relative.encode()) % valid_every == 0


def _as_tokens(chunks: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"\n".join(chunks), dtype=np.uint8).copy()


def stdlib_corpus(max_bytes: int = 4_000_000, valid_every: int = 10) -> TextCorpus:
    """Returns the standard library's ``.py`` sources as byte tokens, split by file.

    A file goes to validation when a stable hash of its path is divisible by ``valid_every``. Files are read in
    sorted path order; each split stops taking files once it holds its share of ``max_bytes`` (``1 / valid_every``
    for validation), so a small budget still gives both splits.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}.")
    if valid_every < 2:
        raise ValueError(f"valid_every must be at least 2, got {valid_every}.")
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"the standard library was not found at {root}; pass a text file to text_file_corpus.")
    budget = {True: max_bytes // valid_every, False: max_bytes - max_bytes // valid_every}
    chunks: dict[bool, list[bytes]] = {True: [], False: []}
    names: dict[bool, list[str]] = {True: [], False: []}
    used = {True: 0, False: 0}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(("site-packages/", "dist-packages/")):
            continue
        side = _is_valid_file(relative, valid_every)
        if used[side] >= budget[side]:
            if all(used[s] >= budget[s] for s in (True, False)):
                break
            continue
        try:
            text = path.read_bytes()
        except OSError:
            continue
        chunks[side].append(text)
        names[side].append(relative)
        used[side] += len(text)
    if not chunks[False] or not chunks[True]:
        raise ValueError(f"too little standard-library source under {root} for a train/validation split.")
    return TextCorpus(
        _as_tokens(chunks[False]),
        _as_tokens(chunks[True]),
        source=f"stdlib:{root}",
        train_files=tuple(names[False]),
        valid_files=tuple(names[True]),
    )


def text_file_corpus(path: str | os.PathLike, valid_fraction: float = 0.1) -> TextCorpus:
    """Returns a text file's bytes as tokens; the last ``valid_fraction`` of the file is the validation split."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file {str(p)!r} does not exist or is not a file.")
    data = np.frombuffer(p.read_bytes(), dtype=np.uint8).copy()
    if data.size == 0:
        raise ValueError(f"text file {str(p)!r} is empty; give a file with text in it.")
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}.")
    cut = int(round(data.size * (1.0 - valid_fraction)))
    if cut < 2 or data.size - cut < 2:
        raise ValueError(f"text file {str(p)!r} has {data.size} bytes, too few to split into train and validation.")
    return TextCorpus(data[:cut], data[cut:], source=str(p))


def sample_windows(key: jax.Array, tokens: jax.Array, batch: int, length: int) -> jax.Array:
    """Returns ``batch`` windows of ``length`` consecutive tokens at uniform random offsets; jit- and vmap-able.

    tokens: [num_tokens] -> [batch, length] int32
    """
    if tokens.shape[0] < length:
        raise ValueError(f"the token array has {tokens.shape[0]} tokens, fewer than the window length {length}.")
    starts = jax.random.randint(key, (batch,), 0, tokens.shape[0] - length + 1)
    tokens = jnp.asarray(tokens)
    window = lambda s: jax.lax.dynamic_slice_in_dim(tokens, s, length)  # noqa: E731
    return jax.vmap(window)(starts).astype(jnp.int32)


def sample_window_rows(key: jax.Array, tokens: np.ndarray, batch: int, length: int, rows: slice) -> np.ndarray:
    """Returns rows ``rows`` of :func:`sample_windows`'s batch (same key, same windows), read on the host: each
    process of a multi-process run reads only the windows it feeds.

    tokens: [num_tokens] -> [len(rows), length] int32
    """
    if tokens.shape[0] < length:
        raise ValueError(f"the token array has {tokens.shape[0]} tokens, fewer than the window length {length}.")
    starts = np.asarray(jax.random.randint(key, (batch,), 0, tokens.shape[0] - length + 1))[rows]
    return np.asarray(tokens)[starts[:, None] + np.arange(length)].astype(np.int32)


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """Images with labels. images: [n, height, width] float32 in [0, 1]; labels: [n] int32."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int


def digits(valid_fraction: float = 0.2, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Returns ``(train, valid)`` splits of scikit-learn's bundled 8x8 digits (1,797 images, 10 classes)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - scikit-learn is a core dependency
        raise ImportError("the embedded digits need scikit-learn: pip install scikit-learn") from err
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(round(len(labels) * (1.0 - valid_fraction)))
    train, valid = order[:cut], order[cut:]
    return ImageSet(images[train], labels[train], 10), ImageSet(images[valid], labels[valid], 10)


def to_patches(images: np.ndarray, patch: int) -> np.ndarray:
    """Returns non-overlapping ``patch x patch`` patches in raster order.

    images: [n, height, width] -> [n, (height / patch) * (width / patch), patch * patch]
    """
    n, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"patch ({patch}) must divide the image height and width ({h}x{w}).")
    x = images.reshape(n, h // patch, patch, w // patch, patch).transpose(0, 1, 3, 2, 4)
    return x.reshape(n, (h // patch) * (w // patch), patch * patch)
