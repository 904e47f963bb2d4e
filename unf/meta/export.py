"""The one on-disk format of meta-params: a folder holding ``meta_params.npz`` (each leaf keyed by its tree path)
beside ``info.json`` (what made them). The shipped optimizers, ``unf-meta-train --recipe`` exports and the paper
rules' runs all use it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hetnet import distributed

PARAMS, INFO = "meta_params.npz", "info.json"


def save_npz(path: Path, meta_params: Any) -> None:
    """Writes ``meta_params`` (host arrays) as an ``.npz`` keyed by each leaf's tree path."""
    flat = jax.tree_util.tree_flatten_with_path(meta_params)[0]
    np.savez(path, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in flat})


def load_npz(path: Path, like: Any) -> Any:
    """Returns the meta-params in ``path`` with the structure of ``like``; raises ValueError on any mismatch."""
    with np.load(path) as stored:
        arrays = dict(stored)
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = []
    for key, ref in flat:
        name = jax.tree_util.keystr(key)
        if name not in arrays or arrays[name].shape != jnp.shape(ref):
            got = arrays[name].shape if name in arrays else "missing"
            raise ValueError(f"{path}: leaf {name} is {got}, expected shape {jnp.shape(ref)}; the file does not hold "
                             "meta-params of this optimizer.")
        # Made concretely even inside a jit: an optimizer built there (a sharded nnx.Optimizer made in its create
        # function) then holds constants, not values traced there that would escape into the next jit.
        with jax.ensure_compile_time_eval():
            leaves.append(jnp.asarray(arrays.pop(name)))
    if arrays:
        raise ValueError(f"{path}: unexpected leaves {sorted(arrays)}; the file does not hold meta-params of this "
                         "optimizer.")
    return treedef.unflatten(leaves)


def save_meta_params(folder: str | Path, meta_params: Any, info: dict) -> Path:
    """Writes ``meta_params`` and ``info`` into ``folder`` and returns it; in a multi-process run only process 0
    writes, and ``meta_params`` must be host arrays there (:func:`hetnet.distributed.to_host`, which every process
    calls)."""
    folder = Path(folder)
    if distributed.is_main():
        folder.mkdir(parents=True, exist_ok=True)
        save_npz(folder / PARAMS, meta_params)
        (folder / INFO).write_text(json.dumps(info, indent=1) + "\n")
    return folder


def read_meta_info(folder: str | Path) -> dict:
    """Returns the ``info.json`` saved beside meta-params; raises FileNotFoundError naming what is missing."""
    folder = Path(folder)
    missing = [name for name in (PARAMS, INFO) if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"no meta-params at {str(folder)!r}: {' and '.join(missing)} missing (expected "
                                f"{PARAMS} and {INFO}, as unf-meta-train writes).")
    return json.loads((folder / INFO).read_text())


def load_meta_params(folder: str | Path, like: Any) -> tuple[Any, dict]:
    """Returns ``(meta_params, info)`` saved by :func:`save_meta_params`; ``like`` gives the tree's structure (arrays
    or shape structs)."""
    info = read_meta_info(folder)
    return load_npz(Path(folder) / PARAMS, like), info
