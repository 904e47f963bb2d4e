"""``hetnet-train``: train a TransformerLM with Adam on the embedded standard-library text (or a text file).

With ``--out`` the run is resumable: params and optimizer state are checkpointed (orbax) every
``--checkpoint-every`` steps, and running the same command again continues from the newest checkpoint, drawing the
same batches an unbroken run would (a larger ``--steps`` extends a finished run).

With ``--attention sparse`` the model trains with sparse attention; ``--dense-warmup N`` first trains N steps with
dense attention (DeepSeek's recipe, :mod:`hetnet.sparse_training`). With ``router=indexer`` the indexer is fitted to
dense attention by KL throughout, and the reported training loss includes that KL.

With ``--mesh DATA MODEL`` the step is sharded by the params' labels over a mesh of every device of every process
(data parallel over DATA, tensor parallel over MODEL); started by ``python -m hetnet.launch`` (or under a cluster's
launcher with ``--distributed``) each process reads only its rows of each batch, and only process 0 prints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from hetnet import attention, data, distributed, sharding, sparse_training
from hetnet.checkpoints import Checkpoints, open_run
from hetnet.config import BLOCK_KINDS, DTYPES, FFN_KINDS, POSITION_KINDS, TransformerConfig
from hetnet.models import TransformerLM
from hetnet.train import make_eval_step, make_train_step, step_shardings


def _option(text: str) -> tuple[str, object]:
    """Parses ``NAME=VALUE`` into ``(name, value)``, the value as int, float, bool or else string."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    for convert in (int, float):
        try:
            return name, convert(raw)
        except ValueError:
            pass
    return name, {"true": True, "false": False}.get(raw.lower(), raw)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hetnet-train", description=__doc__)
    p.add_argument("--text", type=Path, default=None, help="a text file to train on (default: the standard library)")
    p.add_argument("--max-bytes", type=_positive_int, default=4_000_000, help="standard-library bytes to read")
    p.add_argument("--steps", type=_positive_int, default=300)
    p.add_argument("--batch", type=_positive_int, default=32)
    p.add_argument("--seq-len", type=_positive_int, default=64)
    p.add_argument("--d-model", type=_positive_int, default=64)
    p.add_argument("--layers", type=_positive_int, default=2)
    p.add_argument("--heads", type=_positive_int, default=4)
    p.add_argument("--kv-heads", type=_positive_int, default=None)
    p.add_argument("--norm", choices=("rms", "layer"), default="rms")
    p.add_argument("--ffn", choices=FFN_KINDS, default="gelu")
    p.add_argument("--positions", choices=POSITION_KINDS, default="learned",
                   help="a learned position table, or rotary positions in attention")
    p.add_argument("--attention", choices=attention.variants(), default="softmax")
    p.add_argument("--attention-option", action="append", default=[], metavar="NAME=VALUE", type=_option,
                   help="a setting of the attention variant, e.g. --attention-option top_k=8 (repeatable)")
    p.add_argument("--dense-warmup", type=int, default=0, metavar="STEPS",
                   help="with --attention sparse: train this many first steps with dense attention (fitting a "
                   "learned indexer to it), then sparse (DeepSeek's recipe; default 0: sparse from scratch)")
    p.add_argument("--block", choices=BLOCK_KINDS, default="standard",
                   help="stacked blocks, one recurrent block, or the Hyper-SET layer (--layers iterations)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype; params stay float32")
    p.add_argument("--mesh", type=_positive_int, nargs=2, default=None, metavar=("DATA", "MODEL"),
                   help="shard the step over a DATA x MODEL mesh of all devices (of all processes)")
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-process run found by jax.distributed's cluster detection; runs started by "
                   "python -m hetnet.launch join without it")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=_positive_int, default=100)
    p.add_argument("--eval-batches", type=_positive_int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="run folder: metrics.jsonl, run_config.json and checkpoints/; rerun to resume")
    p.add_argument("--checkpoint-every", type=_positive_int, default=100, help="steps between checkpoints (with --out)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def evaluate(eval_step, params, make_batch, key: jax.Array, batches: int) -> float:
    """Returns the mean validation loss over ``batches`` batches ``make_batch(key)``."""
    return float(np.mean([float(eval_step(params, make_batch(k))) for k in jax.random.split(key, batches)]))


def batch_maker(tokens: np.ndarray, batch: int, length: int, shardings):
    """Returns ``make(key) -> {"tokens": [batch, length]}``: on one device straight from :func:`data.sample_windows`,
    with ``shardings`` a global batch to which this process contributes only its own rows."""
    if shardings is None:
        on_device = jnp.asarray(tokens)
        return lambda key: {"tokens": data.sample_windows(key, on_device, batch, length)}
    rows = distributed.process_rows(batch)
    return lambda key: distributed.global_batch(
        {"tokens": data.sample_window_rows(key, tokens, batch, length, rows)}, shardings.batch)


# The settings that fix a run's trajectory; a resume must repeat them. --steps may grow, and --mesh may change (the
# state is restored onto whatever layout this run uses).
TRAJECTORY = ("text", "max_bytes", "batch", "seq_len", "d_model", "layers", "heads", "kv_heads", "norm", "ffn",
              "positions", "attention", "attention_option", "dense_warmup", "block", "dtype", "lr", "seed")


def run_description(args: argparse.Namespace) -> dict:
    """Returns the settings in :data:`TRAJECTORY` as they read back from run_config.json."""
    return json.loads(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                                  if k in TRAJECTORY}))


def resume(args: argparse.Namespace, state: dict) -> tuple[dict, int, Checkpoints | None]:
    """Returns ``(state, steps done, checkpoints)``: the newest checkpoint in ``args.out`` (none: ``state``, 0),
    after checking the run's settings (:func:`hetnet.checkpoints.open_run`)."""
    if args.out is None:
        return state, 0, None
    state, start, checkpoints = open_run(args.out, run_description(args), state, main=distributed.is_main())
    if start > args.steps:
        checkpoints.close()
        raise ValueError(f"{args.out} holds a run checkpointed at step {start}, past --steps {args.steps}; give "
                         f"--steps >= {start} to continue it.")
    if start:
        distributed.main_print(f"resuming {args.out} from step {start}", flush=True)
    return state, start, checkpoints


class TrainResult(NamedTuple):
    """What :func:`run` returns: the losses after the last step, the steps trained in all, this call's wall time and
    the final params."""

    final_valid_loss: float
    final_train_loss: float
    steps: int
    seconds: float
    params: Any


def model_config(args: argparse.Namespace, vocab_size: int) -> TransformerConfig:
    """Returns the model ``args`` describe, over a byte vocabulary of ``vocab_size``."""
    return TransformerConfig(
        vocab_size=vocab_size,
        d_model=args.d_model,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        num_layers=args.layers,
        max_len=args.seq_len,
        norm=args.norm,
        ffn=args.ffn,
        positions=args.positions,
        attention=args.attention,
        attention_options=tuple(args.attention_option),
        block=args.block,
        dtype=args.dtype,
    )


class Steps(NamedTuple):
    """The compiled steps of a run: the training step and its evaluation, and those of the dense warm-up (the same
    two when there is none)."""

    train: Callable
    evaluate: Callable
    warm_train: Callable
    warm_evaluate: Callable


def initial_state(model: TransformerLM, optimizer, key: jax.Array, mesh_shape) -> tuple[dict, Any]:
    """Returns ``({"params", "opt_state"}, shardings)``: fresh state, laid out over a ``mesh_shape`` mesh by the
    params' labels (shardings None without one)."""
    if mesh_shape is None:
        params = model.init(key)
        return {"params": params, "opt_state": optimizer.init(params)}, None
    mesh = sharding.make_mesh(tuple(mesh_shape))
    shardings = step_shardings(optimizer, jax.eval_shape(model.init, key), model.axes, mesh)
    params = jax.jit(model.init, out_shardings=shardings.params)(key)
    return {"params": params, "opt_state": jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)}, \
        shardings


def make_steps(model: TransformerLM, optimizer, args: argparse.Namespace, shardings) -> Steps:
    """Returns the run's steps; with ``--dense-warmup`` the warm-up pair trains and scores the dense twin."""
    sparse = args.attention == "sparse"
    if args.dense_warmup < 0 or (args.dense_warmup and not sparse):
        raise ValueError(f"--dense-warmup must be a number of steps >= 0 and needs --attention sparse, got "
                         f"--dense-warmup {args.dense_warmup} with --attention {args.attention}.")
    # A learned indexer is fitted alongside the model in both phases; without one the loss is the model's own.
    loss_fn = sparse_training.phase_loss(model, dense=False) if sparse else model.loss
    # Sharded params and batches carry their shardings into the eval step.
    train, evaluate_ = make_train_step(loss_fn, optimizer, shardings), make_eval_step(model.loss)
    if not args.dense_warmup:
        return Steps(train, evaluate_, train, evaluate_)
    return Steps(train, evaluate_,
                 make_train_step(sparse_training.phase_loss(model, dense=True), optimizer, shardings),
                 make_eval_step(sparse_training.dense_twin(model).loss))


def check_splits(corpus: data.TextCorpus, seq_len: int) -> None:
    """Raises ValueError naming the split and ``--seq-len`` when a split holds less than one window."""
    length = seq_len + 1
    for split, tokens in (("training", corpus.train), ("validation", corpus.valid)):
        if tokens.size < length:
            raise ValueError(f"the {split} split of {corpus.source} holds {tokens.size} bytes, fewer "
                             f"than one window of --seq-len {seq_len} + 1 = {length}; use a longer --text file "
                             "(its last tenth is the validation split) or a smaller --seq-len.")


def run(args: argparse.Namespace) -> TrainResult:
    """Trains as ``args`` say (resuming ``args.out``) and returns the result."""
    corpus = data.text_file_corpus(args.text) if args.text else data.stdlib_corpus(args.max_bytes)
    model = TransformerLM(model_config(args, corpus.vocab_size))
    k_init, k_data, k_eval = jax.random.split(jax.random.key(args.seed), 3)
    optimizer = optax.adam(args.lr)
    state, shardings = initial_state(model, optimizer, k_init, args.mesh)
    steps = make_steps(model, optimizer, args, shardings)
    check_splits(corpus, args.seq_len)
    train_batch = batch_maker(corpus.train, args.batch, args.seq_len + 1, shardings)
    valid_batch = batch_maker(corpus.valid, args.batch, args.seq_len + 1, shardings)
    main = distributed.is_main()
    state, done, checkpoints = resume(args, state)
    params, opt_state = state["params"], state["opt_state"]
    n_params = sum(x.size for x in jax.tree.leaves(params))
    distributed.main_print(f"corpus {corpus.source}: {corpus.train.size:,} train / {corpus.valid.size:,} valid "
                           f"bytes; model {n_params:,} params", flush=True)
    start, train_loss, valid_loss = time.perf_counter(), math.nan, math.nan
    bar = tqdm(range(done + 1, args.steps + 1), initial=done, total=args.steps, disable=args.quiet or not main,
               desc="train", unit="step")
    with (args.out / "metrics.jsonl").open("a") if args.out is not None and main else open(os.devnull, "w") as log:
        for i in bar:
            warm = sparse_training.in_warmup(i, args.dense_warmup)
            params, opt_state, metrics = (steps.warm_train if warm else steps.train)(
                params, opt_state, train_batch(jax.random.fold_in(k_data, i)))
            train_loss = float(metrics["loss"])
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"training loss became {train_loss} at step {i}; lower --lr.")
            record = {"step": i, "train_loss": train_loss, **({"phase": "dense"} if warm else {})}
            if i % args.eval_every == 0 or i == args.steps:
                valid_loss = record["valid_loss"] = evaluate(steps.warm_evaluate if warm else steps.evaluate,
                                                             params, valid_batch, k_eval, args.eval_batches)
                bar.set_postfix(train=f"{train_loss:.3f}", valid=f"{valid_loss:.3f}")
                if args.quiet:
                    distributed.main_print(f"step {i}: train {train_loss:.4f} valid {valid_loss:.4f}", flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()
            if checkpoints is not None and (i % args.checkpoint_every == 0 or i == args.steps):
                checkpoints.save(i, {"params": params, "opt_state": opt_state})
    if checkpoints is not None:
        checkpoints.close()
    if done == args.steps:  # nothing left to train: report the finished run
        valid_loss = evaluate(steps.evaluate, params, valid_batch, k_eval, args.eval_batches)
    seconds = time.perf_counter() - start
    distributed.main_print(f"final validation loss {valid_loss:.4f} nats/byte ({valid_loss / math.log(2):.3f} "
                           f"bits/byte) after {args.steps} steps in {seconds:.1f}s", flush=True)
    return TrainResult(valid_loss, train_loss, args.steps, seconds, params)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        distributed.initialize(auto=args.distributed)
        run(args)
    except (FileNotFoundError, ValueError, FloatingPointError) as err:
        print(f"hetnet-train: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
