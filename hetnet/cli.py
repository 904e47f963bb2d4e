"""``hetnet-train``: train a TransformerLM with Adam on the embedded standard-library text (or a text file)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from hetnet import attention, data
from hetnet.config import BLOCK_KINDS, TransformerConfig
from hetnet.models import TransformerLM
from hetnet.train import make_eval_step, make_train_step


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
    p.add_argument("--ffn", choices=("gelu", "swiglu"), default="gelu")
    p.add_argument("--attention", choices=attention.variants(), default="softmax")
    p.add_argument("--attention-option", action="append", default=[], metavar="NAME=VALUE", type=_option,
                   help="a setting of the attention variant, e.g. --attention-option top_k=8 (repeatable)")
    p.add_argument("--block", choices=BLOCK_KINDS, default="standard",
                   help="stacked blocks, one recurrent block, or the Hyper-SET layer (--layers iterations)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=_positive_int, default=100)
    p.add_argument("--eval-batches", type=_positive_int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.jsonl (appended as training runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def evaluate(eval_step, params, tokens: jax.Array, key: jax.Array, batches: int, batch: int, length: int) -> float:
    """Returns the mean validation loss over ``batches`` random windows."""
    losses = []
    for k in jax.random.split(key, batches):
        losses.append(float(eval_step(params, {"tokens": data.sample_windows(k, tokens, batch, length)})))
    return float(np.mean(losses))


def run(args: argparse.Namespace) -> dict:
    """Trains as ``args`` say and returns ``{"final_valid_loss", "final_train_loss", "steps", "seconds"}``."""
    corpus = data.text_file_corpus(args.text) if args.text else data.stdlib_corpus(args.max_bytes)
    cfg = TransformerConfig(
        vocab_size=corpus.vocab_size,
        d_model=args.d_model,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        num_layers=args.layers,
        max_len=args.seq_len,
        norm=args.norm,
        ffn=args.ffn,
        attention=args.attention,
        attention_options=tuple(args.attention_option),
        block=args.block,
    )
    key = jax.random.key(args.seed)
    k_init, k_data, k_eval = jax.random.split(key, 3)
    model = TransformerLM(cfg)
    params = model.init(k_init)
    optimizer = optax.adam(args.lr)
    opt_state = optimizer.init(params)
    loss_fn = model.loss
    step, eval_step = make_train_step(loss_fn, optimizer), make_eval_step(loss_fn)
    train_tokens, valid_tokens = jnp.asarray(corpus.train), jnp.asarray(corpus.valid)
    length = args.seq_len + 1
    log = None
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        log = (args.out / "metrics.jsonl").open("a")
    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(f"corpus {corpus.source}: {corpus.train.size:,} train / {corpus.valid.size:,} valid bytes; "
          f"model {n_params:,} params", flush=True)
    start, train_loss, valid_loss = time.perf_counter(), math.nan, math.nan
    bar = tqdm(range(1, args.steps + 1), disable=args.quiet, desc="train", unit="step")
    for i in bar:
        batch = {"tokens": data.sample_windows(jax.random.fold_in(k_data, i), train_tokens, args.batch, length)}
        params, opt_state, metrics = step(params, opt_state, batch)
        train_loss = float(metrics["loss"])
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} at step {i}; lower --lr.")
        record = {"step": i, "train_loss": train_loss}
        if i % args.eval_every == 0 or i == args.steps:
            valid_loss = evaluate(eval_step, params, valid_tokens, k_eval, args.eval_batches, args.batch, length)
            record["valid_loss"] = valid_loss
            bar.set_postfix(train=f"{train_loss:.3f}", valid=f"{valid_loss:.3f}")
            if args.quiet:
                print(f"step {i}: train {train_loss:.4f} valid {valid_loss:.4f}", flush=True)
        if log is not None:
            log.write(json.dumps(record) + "\n")
            log.flush()
    if log is not None:
        log.close()
    seconds = time.perf_counter() - start
    print(f"final validation loss {valid_loss:.4f} nats/byte ({valid_loss / math.log(2):.3f} bits/byte) "
          f"after {args.steps} steps in {seconds:.1f}s", flush=True)
    return {"final_valid_loss": valid_loss, "final_train_loss": train_loss, "steps": args.steps, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError, FloatingPointError) as err:
        print(f"hetnet-train: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
