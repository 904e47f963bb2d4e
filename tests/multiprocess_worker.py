"""One process of a multi-process test run, started by ``hetnet.launch`` from tests/test_multiprocess.py.

    python tests/multiprocess_worker.py steps OUT.npz        # two sharded train steps and one ES meta-step
    python tests/multiprocess_worker.py meta-train DIR [--die-after N]

The same functions compute the single-process reference inside the test process.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from hetnet import distributed

if __name__ == "__main__":
    distributed.initialize()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from hetnet import sharding, train  # noqa: E402
from hetnet.config import TransformerConfig  # noqa: E402
from hetnet.models import TransformerLM  # noqa: E402
from unf import lopt, tasks  # noqa: E402
from unf.meta import estimators as es  # noqa: E402
from unf.meta.train import MetaTrainConfig, MetaTrainState, make_step, meta_optimizer, meta_train, place_state, \
    population_sharding  # noqa: E402

CFG = TransformerConfig(vocab_size=16, d_model=8, num_heads=4, num_kv_heads=2, d_ff=16, num_layers=2, max_len=8)
GLOBAL_ROWS = 8


def global_tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, CFG.vocab_size, (GLOBAL_ROWS, CFG.max_len + 1)).astype(np.int32)


def train_steps() -> dict:
    """Two AdamW steps of a tensor- and data-parallel TransformerLM on a (2, 2) mesh; each process feeds its rows."""
    model, optimizer = TransformerLM(CFG), optax.adamw(1e-2)
    mesh = sharding.make_mesh((2, 2))
    params_shape = jax.eval_shape(model.init, jax.random.key(0))
    shardings = train.step_shardings(optimizer, params_shape, model.axes, mesh)
    params = jax.jit(model.init, out_shardings=shardings.params)(jax.random.key(0))
    opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
    step = train.make_train_step(model.loss, optimizer, shardings)
    rows = distributed.process_rows(GLOBAL_ROWS)
    batch = distributed.global_batch({"tokens": global_tokens()[rows]}, shardings.batch)
    losses = []
    for _ in range(2):
        params, opt_state, metrics = step(params, opt_state, batch)
        losses.append(metrics["loss"])
    return {"losses": np.asarray(distributed.to_host(losses)), "params": distributed.to_host(params)}


def meta_setup():
    task, learned = tasks.mlp_digits(width=8, batch=16), lopt.PerParameterMLP(hidden=8)
    cfg = MetaTrainConfig(steps=4, checkpoint_every=2, seed=3,
                          es=es.ESConfig(num_particles=8, truncation=2, horizons=(10,)))
    return task, learned, cfg


def meta_step() -> dict:
    """One ES meta-step with the population split over every device of every process."""
    task, learned, cfg = meta_setup()
    sharding = population_sharding(cfg.es.num_pairs)
    meta = learned.init_meta_params(jax.random.key(0))
    state = MetaTrainState(meta, meta_optimizer(cfg).init(meta),
                           [es.init_state(jax.random.key(1), task, learned, meta, cfg.es)], jnp.zeros((), jnp.int32))
    state = place_state(state, sharding)
    key = distributed.replicated(jax.random.key(5), sharding.mesh)
    new_meta, _, _, metrics = make_step(task, learned, cfg, sharding)(
        key, state.meta_params, state.meta_opt_state, state.populations[0])
    return {"meta_params": distributed.to_host(new_meta), "meta_loss": np.asarray(metrics.meta_loss)}


def flat(tree, prefix: str) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(v) for path, v in leaves}


def main(argv: list[str]) -> int:
    mode, out = argv[0], Path(argv[1])
    if mode == "steps":
        result = train_steps()
        meta = meta_step()
        if distributed.is_main():
            np.savez(out, losses=result["losses"], meta_loss=meta["meta_loss"], **flat(result["params"], "params"),
                     **flat(meta["meta_params"], "meta"))
        return 0
    if mode == "meta-train":
        task, learned, cfg = meta_setup()
        die_after = int(argv[3]) if len(argv) > 3 and argv[2] == "--die-after" else None
        if die_after is not None and jax.process_index() == 1:
            meta_train(learned, [task], cfg, out, progress=False, stop_after=die_after)
            os.kill(os.getpid(), signal.SIGKILL)
        state = meta_train(learned, [task], cfg, out, progress=False)
        params = distributed.to_host(state.meta_params)
        if distributed.is_main():
            np.savez(out / "final.npz", **flat(params, "meta"))
        return 0
    raise ValueError(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
