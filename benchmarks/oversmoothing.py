"""Over-smoothing in deep transformers: softmax attention against NeuTRENO (Nguyen, Nguyen and Baraniuk, 2023).

Models of the same size (12 layers by default) are trained on the same data with each attention: the embedded digits
as sequences of 2x2 patches (classification, lambda 0.6 as the paper's DeiT), and the standard library's source as a
byte LM (lambda 0.4 as the paper's language model). For each, the mean pairwise cosine similarity of the tokens in the
residual stream after every layer, at initialisation and after training, with the accuracy or validation loss.

    python -m benchmarks.oversmoothing            # CPU, a few minutes
    python -m benchmarks.oversmoothing --large    # 24 layers, wider, longer training (GPU)
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp

from benchmarks import report, timing, training
from hetnet import data, embedding
from hetnet.classifier import SequenceClassifier
from hetnet.config import ClassifierConfig, TransformerConfig
from hetnet.models import Body, TransformerLM

LAMBDAS = {"digits": 0.6, "text": 0.4}


def mean_pairwise_cosine(x: jax.Array) -> jax.Array:
    """Returns the mean over examples of the mean cosine similarity between distinct tokens. x: [batch, seq, d]."""
    u = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    gram = jnp.einsum("bid,bjd->bij", u, u)
    n = x.shape[1]
    return jnp.mean((jnp.sum(gram, axis=(1, 2)) - n) / (n * (n - 1)))


def similarity_by_layer(params, embedded: jax.Array, cfg: TransformerConfig) -> list[float]:
    states = jax.jit(lambda p, x: jax.vmap(mean_pairwise_cosine)(Body(cfg).residual_states(p, x)))(params, embedded)
    return [float(s) for s in states]


def digits_task(base: TransformerConfig, steps: int) -> dict:
    xs, ys, valid = training.digit_patches()
    body = dataclasses.replace(base, causal=False, max_len=xs.shape[1])
    out = {}
    for attention, options in (("softmax", ()), ("neutreno", (("lambda", LAMBDAS["digits"]),))):
        cfg = ClassifierConfig(dataclasses.replace(body, attention=attention, attention_options=options), 10, xs.shape[2])
        params = SequenceClassifier(cfg).init(jax.random.key(0))
        embed = lambda p: valid["inputs"] @ p["inputs"]  # noqa: E731
        initial = similarity_by_layer(params, embed(params), cfg.backbone)
        params, _ = training.train(lambda p, b, cfg=cfg: SequenceClassifier(cfg).loss(p, b), params,
                                   training.digit_sampler(xs, ys, 64), steps, 2e-3, f"digits {attention}")
        out[attention] = {"similarity_init": initial, "similarity": similarity_by_layer(params, embed(params), cfg.backbone),
                          "accuracy": float(jax.jit(lambda p: SequenceClassifier(cfg).accuracy(p, valid))(params))}
    return out


def text_task(base: TransformerConfig, steps: int) -> dict:
    corpus = data.stdlib_corpus(max_bytes=1_000_000)
    train_tokens, valid_tokens = jnp.asarray(corpus.train), jnp.asarray(corpus.valid)
    windows = data.sample_windows(jax.random.key(7), valid_tokens, 64, base.max_len + 1)
    out = {}
    for attention, options in (("softmax", ()), ("neutreno", (("lambda", LAMBDAS["text"]),))):
        cfg = dataclasses.replace(base, attention=attention, attention_options=options)
        params = TransformerLM(cfg).init(jax.random.key(0))
        embed = lambda p: embedding.embed_tokens(p["tokens"], windows[:, :-1], jnp.float32)  # noqa: E731
        initial = similarity_by_layer(params, embed(params), cfg)
        sample_jit = jax.jit(lambda k: data.sample_windows(k, train_tokens, 16, cfg.max_len + 1))

        def sample(rng):
            return {"tokens": sample_jit(jax.random.key(int(rng.integers(2**31))))}

        params, _ = training.train(lambda p, b, cfg=cfg: TransformerLM(cfg).loss(p, b), params, sample, steps, 2e-3,
                                   f"text {attention}")
        out[attention] = {"similarity_init": initial, "similarity": similarity_by_layer(params, embed(params), cfg),
                          "valid_loss": float(jax.jit(lambda p: TransformerLM(cfg).loss(p, {"tokens": windows}))(params))}
    return out


def plot(tasks: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 3.8))
    for ax, (task, res) in zip(axes, tasks.items()):
        for i, (attention, r) in enumerate(res.items()):
            metric = f"acc {r['accuracy']:.3f}" if "accuracy" in r else f"loss {r['valid_loss']:.3f}"
            ax.plot(r["similarity"], "o-", color=f"C{i}", label=f"{attention} trained ({metric})")
            ax.plot(r["similarity_init"], ":", color=f"C{i}", label=f"{attention} at init")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("mean pairwise token cosine similarity")
        ax.set_title(task)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "24 layers, wider, longer training (GPU)")
    args = parser.parse_args(argv)
    size = dict(d_model=128, num_heads=8, num_layers=24) if args.large else dict(d_model=32, num_heads=4, num_layers=12)
    steps = 3000 if args.large else 600
    tasks = {
        "digits": digits_task(TransformerConfig(**size), steps),
        "text": text_task(TransformerConfig(max_len=64, **size), steps),
    }
    rows = []
    for task, res in tasks.items():
        for attention, r in res.items():
            metric = r.get("accuracy", r.get("valid_loss"))
            rows.append([task, attention, "accuracy" if "accuracy" in r else "valid loss", metric,
                         r["similarity_init"][-1], r["similarity"][-1], max(r["similarity"][1:])])
    table = report.markdown_table(
        ["task", "attention", "metric", "value", "last-layer similarity at init", "last-layer similarity trained",
         "max over layers trained"], rows
    )
    table += (f"\n{size['num_layers']} layers, d_model {size['d_model']}, {steps} Adam steps; NeuTRENO lambda "
              f"{LAMBDAS}. Similarity is the mean cosine similarity between distinct tokens of the residual stream "
              "(validation inputs).\n")
    command = "python -m benchmarks.oversmoothing" + (" --large" if args.large else "")
    payload = {"device": timing.device_description(), "command": command, "size": size, "steps": steps,
               "tasks": tasks}
    report.publish("oversmoothing_large" if args.large else "oversmoothing", payload, table, plot(tasks), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
