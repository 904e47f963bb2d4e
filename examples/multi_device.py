"""Train a hetnet model on several devices: shardings come from the axis labels.

On a CPU-only machine, simulate devices before JAX starts:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python examples/multi_device.py
    python examples/multi_device.py --tiny
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

from hetnet import TransformerConfig, TransformerLM, data, sharding, train


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    steps = 3 if args.tiny else args.steps
    devices = jax.device_count()
    model_axis = 2 if devices % 2 == 0 and devices > 1 else 1
    mesh = sharding.make_mesh((devices // model_axis, model_axis), ("data", "model"))
    print(f"{devices} device(s): mesh {dict(mesh.shape)}")

    cfg = TransformerConfig(vocab_size=256, d_model=32, num_heads=4, num_layers=2, max_len=32)
    model = TransformerLM(cfg)
    params, axes = model.init(jax.random.key(0)), model.axes
    optimizer = optax.adam(3e-3)
    # Heads and MLP units split over "model", the batch over "data"; everything else is replicated.
    shardings = train.step_shardings(optimizer, params, axes, mesh)
    print("query kernel:", shardings.params["blocks"]["attn"]["query"].spec)
    step = train.make_train_step(model.loss, optimizer, shardings)
    params = train.place(params, shardings.params)
    opt_state = train.place(optimizer.init(params), shardings.opt_state)

    corpus = data.stdlib_corpus(max_bytes=200_000)
    losses = []
    for i in range(steps):
        tokens = data.sample_windows(jax.random.key(i), corpus.train, batch=8, length=cfg.max_len + 1)
        batch = train.place({"tokens": tokens}, shardings.batch)
        params, opt_state, metrics = step(params, opt_state, batch)
        losses.append(float(metrics["loss"]))
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return {"losses": np.asarray(losses), "mesh": dict(mesh.shape), "params": params, "cfg": cfg}


if __name__ == "__main__":
    main()
