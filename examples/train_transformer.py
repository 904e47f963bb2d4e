"""Build a hetnet TransformerLM with any attention variant (or a recurrent / Hyper-SET body) and train it with optax.

    python examples/train_transformer.py --attention sparse --steps 200
    python examples/train_transformer.py --block hyperset --layers 4
    python examples/train_transformer.py --tiny          # seconds, as the tests run it
"""

from __future__ import annotations

import argparse

import jax
import optax

from hetnet import TransformerConfig, TransformerLM, attention, data, train

VARIANT_OPTIONS = {"sparse": (("block", 16), ("top_k", 2)), "neutreno": (("lambda", 0.4),), "linear": ()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attention", default="softmax", choices=attention.variants())
    parser.add_argument("--block", default="standard", choices=["standard", "recurrent", "hyperset"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tiny", action="store_true", help="a few steps of a tiny model")
    args = parser.parse_args(argv)
    steps, width, context = (5, 16, 32) if args.tiny else (args.steps, 64, 128)

    # 1. A config: every field is checked at construction and errors name the field to fix.
    cfg = TransformerConfig(
        vocab_size=256, d_model=width, num_heads=4, num_layers=args.layers, max_len=context, block=args.block,
        attention=args.attention, attention_options=VARIANT_OPTIONS.get(args.attention, ()),
    )
    # 2. Params and their axis labels: a pytree of arrays and a matching tree of label tuples.
    model = TransformerLM(cfg)
    params = model.init(jax.random.key(0))
    print("parameters:", sum(x.size for x in jax.tree.leaves(params)))

    # 3. Data: the standard library's own source as bytes, split by file.
    corpus = data.stdlib_corpus(max_bytes=200_000 if args.tiny else 2_000_000)

    # 4. Any optax transformation; the step is jitted once and reused.
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-3))
    step = train.make_train_step(model.loss, optimizer)
    opt_state = optimizer.init(params)
    losses = []
    for i in range(steps):
        tokens = data.sample_windows(jax.random.key(i), corpus.train, batch=16, length=context + 1)
        params, opt_state, metrics = step(params, opt_state, {"tokens": tokens})
        losses.append(float(metrics["loss"]))
        if i % 50 == 0 or i == steps - 1:
            print(f"step {i:4d}  loss {losses[-1]:.3f}  grad norm {float(metrics['grad_norm']):.3f}")

    valid = data.sample_windows(jax.random.key(10_000), corpus.valid, batch=16, length=context + 1)
    valid_loss = float(jax.jit(model.loss)(params, {"tokens": valid}))
    print(f"validation loss {valid_loss:.3f} nats/byte")
    return {"losses": losses, "valid_loss": valid_loss, "axes": model.axes}


if __name__ == "__main__":
    main()
