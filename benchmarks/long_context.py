"""Long context as the sparse-attention papers measure it: byte LMs trained dense and sparse at equal steps and
parameters, compared on validation loss, passkey retrieval by needle depth, train-step and forward time, and memory.

Every model (rotary positions) reads the same rows: standard-library source with a passkey hidden at a random depth
(:mod:`hetnet.passkey`), trained on next-byte loss plus five times the loss on the key's digits. As long-context
models are made (and as DSA starts from a dense checkpoint), every variant at every context starts from one dense
model trained at a short context (``pretrain_context``, where retrieval is learnt in a few hundred steps) and is
then trained ``steps`` steps at its own context with its own attention. Validation loss is next-byte
loss on held-out plain source windows of the full context; passkey accuracy is the share of held-out rows, per
needle depth, whose key the model reproduces.

Variants at each context (``block`` = context / 64, so every context has 64 blocks):

- ``dense``: softmax attention;
- ``sparse-block-1/8``, ``sparse-block-1/16``: one routing choice per query block by mean keys (MoBA);
- ``sparse-query-1/8``: a routing choice per 8 queries (half a block where blocks are shorter than 16);
- ``sparse-indexer-1/8``, ``sparse-indexer-1/16``: routed by the learned indexer, trained by DeepSeek's recipe (a
  dense warm-up of a quarter of the steps that fits the indexer to dense attention, then sparse training).

``keys_read_fraction`` is the share of the context a query block reads exactly: its own block, one neighbour, the
first block and ``top_k`` routed blocks, times ``block`` over the context (the summaries of the other blocks add 64
mean keys). Step and forward times are medians of interleaved repeats at a fixed batch; memory is XLA's compiled
estimate of one train step. Contexts past ``--contexts`` (``--speed-contexts``) are timed and sized, not trained.

    python -m benchmarks.long_context                      # train at 1k and 4k, time to 8k (2-core CPU: ~75 min)
    python -m benchmarks.long_context --contexts 512 --steps 8 --pretrain-steps 4 --speed-contexts  # a smoke run
    python -m benchmarks.long_context --large              # GPU: train to 8k, time to 64k against cuDNN

Each trained model's result is kept in ``--work`` as it finishes, so a rerun resumes after the last one done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import report, timing
from hetnet import data, passkey, sparse_training
from hetnet.config import TransformerConfig
from hetnet.models import TransformerLM
from hetnet.train import inner_step, make_train_step

BLOCKS = 64
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
WARMUP_SHARE = 0.25


@dataclasses.dataclass(frozen=True)
class Variant:
    """One attention setting: ``top_k`` routed blocks on top of own, neighbour and first (1/8: 5, 1/16: 1)."""

    name: str
    top_k: int | None = None
    router: str = "mean"
    per_query: bool = False

    @property
    def dense(self) -> bool:
        return self.top_k is None

    def options(self, context: int) -> tuple:
        block = context // BLOCKS
        opts = (("block", block), ("top_k", self.top_k), ("window", 1))
        if self.per_query or self.router == "indexer":
            opts += (("query_group", min(8, max(1, block // 2))),)
        if self.router == "indexer":
            opts += (("router", "indexer"),)
        return opts

    def keys_read_fraction(self) -> float:
        return 1.0 if self.dense else (3 + self.top_k) / BLOCKS


VARIANTS = (Variant("dense"), Variant("sparse-block-1/8", 5), Variant("sparse-block-1/16", 1),
            Variant("sparse-query-1/8", 5, per_query=True), Variant("sparse-indexer-1/8", 5, "indexer"),
            Variant("sparse-indexer-1/16", 1, "indexer"))


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every model at every context shares."""

    d_model: int = 64
    heads: int = 4
    layers: int = 2
    tokens_per_step: int = 4096
    steps: int = 200
    lr: float = 1e-3
    answer_weight: float = 5.0
    pretrain_context: int = 256
    pretrain_steps: int = 3000
    pretrain_lr: float = 3e-3
    eval_rows: int = 64
    seed: int = 0

    def model(self, context: int, variant: Variant) -> TransformerLM:
        return TransformerLM(TransformerConfig(
            d_model=self.d_model, num_heads=self.heads, num_layers=self.layers, max_len=context, positions="rope",
            attention="softmax" if variant.dense else "sparse",
            attention_options=() if variant.dense else variant.options(context)))

    def batch(self, context: int) -> int:
        return max(1, self.tokens_per_step // context)


def losses(setup: Setup, context: int, variant: Variant):
    """Returns ``(warm-up loss or None, loss)`` of one variant, each ``(params, batch) -> scalar``."""
    model = setup.model(context, variant)

    def task_loss(runner, params, batch):
        return passkey.loss(runner, params, batch["tokens"], batch["answer"], setup.answer_weight)

    if variant.dense:
        return None, lambda p, b: task_loss(model, p, b)
    warm = (sparse_training.phase_loss(model, dense=True, task_loss=task_loss)
            if variant.router == "indexer" else None)
    return warm, sparse_training.phase_loss(model, dense=False, task_loss=task_loss)


def pretrain(setup: Setup, corpus, path: Path):
    """Returns the shared starting point: a dense model trained at ``setup.pretrain_context`` (kept at ``path``).

    Rotary positions leave the params independent of the context, so every variant at every context starts here.
    """
    model = setup.model(setup.pretrain_context, VARIANTS[0])
    params = model.init(jax.random.key(setup.seed))
    if path.exists():
        with np.load(path) as saved:
            return jax.tree.unflatten(jax.tree.structure(params), [jnp.asarray(saved[str(i)])
                                                                   for i in range(len(saved.files))])
    schedule = optax.warmup_cosine_decay_schedule(0.0, setup.pretrain_lr, setup.pretrain_steps // 20,
                                                  setup.pretrain_steps, setup.pretrain_lr / 10)
    optimizer = optax.adam(schedule)
    step = make_train_step(losses(setup, setup.pretrain_context, VARIANTS[0])[1], optimizer)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(setup.seed + 3)
    for i in range(1, setup.pretrain_steps + 1):
        rows = passkey.make_batch(rng, corpus.train, setup.batch(setup.pretrain_context), setup.pretrain_context)
        params, opt_state, metrics = step(params, opt_state, {"tokens": jnp.asarray(rows.tokens),
                                                               "answer": jnp.asarray(rows.answer)})
        if i % 100 == 0:
            print(f"  pretraining dense at context {setup.pretrain_context} step {i}: loss "
                  f"{float(metrics['loss']):.3f}", flush=True)
    np.savez(path, **{str(i): np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(params))})
    return params


def start_from(model: TransformerLM, start, key: jax.Array):
    """Returns ``model``'s params with every tensor the shared start has taken from it (a sparse indexer's kernels,
    which the dense start lacks, freshly initialised)."""
    params = model.init(key)
    merged = {**start, "blocks": {**start["blocks"], "attn": {**params["blocks"]["attn"], **start["blocks"]["attn"]}}}
    if jax.tree.structure(merged) != jax.tree.structure(params):
        raise ValueError(f"the shared start does not fit {model.cfg.attention} attention's params")
    return jax.tree.map(jnp.array, merged)  # copies: the train step donates its params


def train(setup: Setup, context: int, variant: Variant, corpus, start) -> dict:
    """Trains one model from the shared start; returns its validation loss, passkey accuracy by depth and time."""
    model = setup.model(context, variant)
    params = start_from(model, start, jax.random.key(setup.seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, setup.lr, setup.steps // 20, setup.steps, setup.lr / 10)
    optimizer = optax.adam(schedule)
    warm_loss, loss = losses(setup, context, variant)
    step = make_train_step(loss, optimizer)
    warm_step = make_train_step(warm_loss, optimizer) if warm_loss is not None else None
    warmup = int(WARMUP_SHARE * setup.steps) if warm_step is not None else 0
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(setup.seed)
    start = time.perf_counter()
    for i in range(1, setup.steps + 1):
        rows = passkey.make_batch(rng, corpus.train, setup.batch(context), context)
        batch = {"tokens": jnp.asarray(rows.tokens), "answer": jnp.asarray(rows.answer)}
        params, opt_state, metrics = (warm_step if i <= warmup else step)(params, opt_state, batch)
        if i % 50 == 0 or i == setup.steps:
            loss_value = float(metrics["loss"])
            if not np.isfinite(loss_value):
                raise FloatingPointError(f"{variant.name} at context {context}: loss {loss_value} at step {i}")
            print(f"  {variant.name} context {context} step {i}: loss {loss_value:.3f}", flush=True)
    seconds = time.perf_counter() - start
    return {"valid_loss": valid_loss(model, params, corpus, context, setup),
            "passkey_accuracy": passkey_accuracy(model, params, corpus, context, setup), "train_seconds": seconds}


def valid_loss(model: TransformerLM, params, corpus, context: int, setup: Setup) -> float:
    """Mean next-byte loss on ``setup.eval_rows`` held-out windows, ``batch`` rows at a time."""
    loss = jax.jit(model.loss)
    tokens = jnp.asarray(corpus.valid)
    keys = jax.random.split(jax.random.key(setup.seed + 1), -(-setup.eval_rows // setup.batch(context)))
    return float(np.mean([float(loss(params, {"tokens": data.sample_windows(k, tokens, setup.batch(context),
                                                                             context + 1)})) for k in keys]))


def passkey_accuracy(model: TransformerLM, params, corpus, context: int, setup: Setup) -> dict[str, float]:
    """Share of ``setup.eval_rows`` held-out rows per needle depth whose key the model reproduces."""
    correct = jax.jit(lambda p, t, a: passkey.correct(model, p, t, a))
    rng = np.random.default_rng(setup.seed + 2)
    out = {}
    for depth in DEPTHS:
        hits = []
        for _ in range(-(-setup.eval_rows // setup.batch(context))):
            rows = passkey.make_batch(rng, corpus.valid, setup.batch(context), context, depth=depth)
            hits.append(np.asarray(correct(params, rows.tokens, rows.answer)))
        out[str(depth)] = float(np.mean(np.concatenate(hits)[: setup.eval_rows]))
    return out


def speed(setup: Setup, context: int, variants, repeats: int) -> dict[str, dict]:
    """Returns per variant the median train-step and forward seconds (interleaved) and the train step's memory."""
    rows = passkey.make_batch(np.random.default_rng(0), np.zeros(context, np.int32), setup.batch(context), context)
    batch = {"tokens": jnp.asarray(rows.tokens), "answer": jnp.asarray(rows.answer)}
    optimizer = optax.adam(1e-3)
    steps, forwards, memory = {}, {}, {}
    for variant in variants:
        model = setup.model(context, variant)
        params = model.init(jax.random.key(0))
        opt_state = optimizer.init(params)
        # Not the donating train step: the same params are stepped again at every repeat.
        step = jax.jit(lambda p, o, b, loss=losses(setup, context, variant)[1]: inner_step(loss, optimizer, p, o, b))
        memory[variant.name] = timing.compiled_memory_bytes(step, params, opt_state, batch)
        forward = jax.jit(model.apply)
        steps[variant.name] = lambda s=step, p=params, o=opt_state: s(p, o, batch)[2]
        forwards[variant.name] = lambda f=forward, p=params: f(p, batch["tokens"][:, :-1])
    step_s = timing.time_interleaved(steps, repeats=repeats, warmup=1)
    forward_s = timing.time_interleaved(forwards, repeats=repeats, warmup=1)
    return {v.name: {"step_s": step_s[v.name]["median"], "forward_s": forward_s[v.name]["median"],
                     "memory_bytes": memory[v.name]} for v in variants}


def entries(trained: dict, speeds: dict, variants) -> list[dict]:
    """Returns one entry per (context, variant): the trained results and the speed ratios against dense."""
    out = []
    for context in sorted(set(speeds) | {int(c) for c in trained}):
        timed = speeds.get(context, {})
        dense = timed.get("dense")
        for v in variants:
            run = trained.get(str(context), {}).get(v.name)
            t = timed.get(v.name)
            out.append({
                "context": context, "variant": v.name, "keys_read_fraction": v.keys_read_fraction(),
                "valid_loss": None if run is None else run["valid_loss"],
                "passkey_accuracy": None if run is None else run["passkey_accuracy"],
                "step_time_ratio_vs_dense": None if t is None or dense is None else t["step_s"] / dense["step_s"],
                "forward_time_ratio_vs_dense": (None if t is None or dense is None
                                                else t["forward_s"] / dense["forward_s"]),
                "memory_ratio_vs_dense": (None if t is None or dense is None
                                          else t["memory_bytes"] / dense["memory_bytes"]),
                "step_s": None if t is None else t["step_s"], "forward_s": None if t is None else t["forward_s"],
                "memory_bytes": None if t is None else t["memory_bytes"],
                "train_seconds": None if run is None else run["train_seconds"],
            })
    return out


def targets(rows: list[dict]) -> dict[str, bool | None]:
    """The issue's targets for trained sparse at 1/8 of the keys, judged on these rows (None: nothing to judge)."""
    eighth = [r for r in rows if r["variant"] != "dense" and r["variant"].endswith("1/8")]
    dense = {r["context"]: r for r in rows if r["variant"] == "dense"}
    trained = [r for r in eighth if r["valid_loss"] is not None]
    loss_ok = [r["valid_loss"] <= 1.01 * dense[r["context"]]["valid_loss"] for r in trained]
    passkey_ok = [all(r["passkey_accuracy"][d] >= dense[r["context"]]["passkey_accuracy"][d] - 0.05
                      for d in r["passkey_accuracy"]) for r in trained]
    faster = [r["step_time_ratio_vs_dense"] < 1 for r in eighth
              if r["context"] >= 4096 and r["step_time_ratio_vs_dense"] is not None]
    longest = max((r["context"] for r in eighth if r["memory_ratio_vs_dense"] is not None), default=None)
    memory = [r["memory_ratio_vs_dense"] <= 0.25 for r in eighth if r["context"] == longest]

    def judged(flags):
        return None if not flags else all(flags)

    return {"valid_loss_within_1pct": judged(loss_ok), "passkey_within_5_points": judged(passkey_ok),
            "step_faster_from_4k": judged(faster), "memory_quarter_at_longest": judged(memory)}


def plot(rows: list[dict], variants):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    for i, v in enumerate(variants):
        mine = [r for r in rows if r["variant"] == v.name]
        style = dict(marker="os^v<>"[i % 6], label=v.name, color=f"C{i}")
        trained = [r for r in mine if r["valid_loss"] is not None]
        axes[0].plot([r["context"] for r in trained], [r["valid_loss"] for r in trained], **style)
        for r in trained:
            depths = sorted(r["passkey_accuracy"], key=float)
            axes[1].plot([float(d) for d in depths], [r["passkey_accuracy"][d] for d in depths],
                         ls="-" if r["context"] == trained[-1]["context"] else ":", color=f"C{i}",
                         marker=style["marker"], label=f"{v.name}, {r['context']}")
        timed = [r for r in mine if r["step_time_ratio_vs_dense"] is not None]
        axes[2].plot([r["context"] for r in timed], [r["step_time_ratio_vs_dense"] for r in timed], **style)
        axes[3].plot([r["context"] for r in timed], [r["memory_ratio_vs_dense"] for r in timed], **style)
    axes[0].set(xscale="log", xlabel="context (bytes)", ylabel="validation loss (nats/byte)")
    axes[1].set(xlabel="needle depth", ylabel="passkey accuracy", ylim=(-0.05, 1.05))
    axes[2].set(xscale="log", yscale="log", xlabel="context", ylabel="train step time / dense")
    axes[3].set(xscale="log", yscale="log", xlabel="context", ylabel="train step memory / dense")
    axes[3].axhline(0.25, color="grey", lw=0.8)
    axes[2].axhline(1.0, color="grey", lw=0.8)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=5)
    fig.suptitle("dense vs sparse attention in trained byte LMs (passkey rows; equal steps and parameters)")
    fig.tight_layout()
    return fig


def table(rows: list[dict]) -> str:
    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    body = []
    for r in rows:
        acc = r["passkey_accuracy"]
        body.append([r["context"], r["variant"], fmt(r["keys_read_fraction"], ".3f"), fmt(r["valid_loss"], ".4f"),
                     "-" if acc is None else " / ".join(f"{acc[d]:.2f}" for d in sorted(acc, key=float)),
                     fmt(r["step_time_ratio_vs_dense"], ".3f"), fmt(r["forward_time_ratio_vs_dense"], ".3f"),
                     fmt(r["memory_ratio_vs_dense"], ".3f")])
    return report.markdown_table(
        ["context", "variant", "keys read", "valid loss", f"passkey by depth {' / '.join(map(str, DEPTHS))}",
         "step time / dense", "forward time / dense", "memory / dense"], body)


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "train to 8k and time to 64k (GPU)")
    parser.add_argument("--contexts", type=int, nargs="+", default=None, help="contexts to train at")
    parser.add_argument("--speed-contexts", type=int, nargs="*", default=None,
                        help="further contexts to time and size only")
    parser.add_argument("--steps", type=int, default=Setup.steps)
    parser.add_argument("--pretrain-steps", type=int, default=Setup.pretrain_steps,
                        help="steps of the shared dense start at the short context")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-variants", nargs="+", default=None, choices=[v.name for v in VARIANTS],
                        help="variants to train at the contexts past the first (default all; all are timed)")
    parser.add_argument("--work", type=Path, default=Path("runs/long_context"),
                        help="where finished runs are kept for a resumed invocation")
    args = parser.parse_args(argv)
    contexts = args.contexts or ([1024, 4096, 8192] if args.large else [1024, 4096])
    extra = args.speed_contexts if args.speed_contexts is not None else (
        [16384, 32768, 65536] if args.large else [8192])
    bad = [c for c in contexts + extra if c < 512 or c % BLOCKS]
    if bad:
        parser.error(f"contexts must be multiples of {BLOCKS} of at least 512 (64 blocks, room for the passkey), "
                     f"got {bad}")
    if args.steps < 4:
        parser.error(f"--steps must be at least 4, got {args.steps}")
    setup = Setup(steps=args.steps, pretrain_steps=args.pretrain_steps)
    corpus = data.stdlib_corpus()
    args.work.mkdir(parents=True, exist_ok=True)
    done_path = args.work / "trained.json"
    trained = json.loads(done_path.read_text()) if done_path.exists() else {}
    if trained.get("setup") != dataclasses.asdict(setup):
        trained = {"setup": dataclasses.asdict(setup)}  # other settings: start over
    runs = trained.setdefault("runs", {})
    tag = hashlib.sha1(json.dumps(trained["setup"]).encode()).hexdigest()[:10]
    start = pretrain(setup, corpus, args.work / f"start_{tag}.npz")
    start_model = setup.model(setup.pretrain_context, VARIANTS[0])
    start_scores = {"context": setup.pretrain_context,
                    "valid_loss": valid_loss(start_model, start, corpus, setup.pretrain_context, setup),
                    "passkey_accuracy": passkey_accuracy(start_model, start, corpus, setup.pretrain_context, setup)}
    print(f"shared start: {start_scores}", flush=True)
    for context in contexts:
        for variant in VARIANTS:
            chosen = args.train_variants is None or context == contexts[0] or variant.name in args.train_variants
            if variant.name in runs.get(str(context), {}) or not chosen:
                continue
            print(f"training {variant.name} at context {context}", flush=True)
            runs.setdefault(str(context), {})[variant.name] = train(setup, context, variant, corpus, start)
            done_path.write_text(json.dumps(trained, indent=1) + "\n")
    speeds = {}
    for context in sorted(set(contexts + extra)):
        print(f"timing at context {context}", flush=True)
        speeds[context] = speed(setup, context, VARIANTS, args.repeats)
    rows = entries(runs, speeds, VARIANTS)
    met = targets(rows)
    text = table(rows) + (
        f"\nByte LMs of {setup.layers} layers, d_model {setup.d_model}, {setup.heads} heads, {setup.steps} Adam steps "
        f"of {setup.tokens_per_step} tokens on passkey rows; indexer variants warm up dense for "
        f"{int(WARMUP_SHARE * setup.steps)} steps. Passkey accuracy over {setup.eval_rows} held-out rows per depth. "
        f"Times are medians of {args.repeats} interleaved train steps (forward passes) at "
        f"{setup.tokens_per_step} tokens; memory is XLA's compiled estimate of a train step. Targets for 1/8 of the "
        f"keys: {met}.\n")
    command = "python -m benchmarks.long_context" + (" " + " ".join(argv) if argv else "")
    if argv is None and len(sys.argv) > 1:
        command = "python -m benchmarks.long_context " + " ".join(sys.argv[1:])
    payload = {"device": timing.device_description(), "command": command, "setup": dataclasses.asdict(setup),
               "shared_start": start_scores, "entries": rows, "targets": met}
    report.publish("long_context_large" if args.large else "long_context", payload, text, plot(rows, VARIANTS),
                   args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
