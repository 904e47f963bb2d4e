"""A pre-trained learned optimizer in an optax loop, then one meta-trained on your own task.

Part 1 takes the optimizer that ships with the package and trains a hetnet TransformerLM with it, exactly where
``optax.adam`` would go. Part 2 meta-trains the same kind of optimizer (Adam plus a learned UNF correction) on your
own task: four pure functions and a spec, ``init(key) -> params``, ``loss(params, batch) -> scalar``,
``sample_batch(key) -> batch`` (jit- and vmap-able) and the weight space of ``params``.

    python examples/learned_optimizer.py --meta-steps 500 --out runs/example_lopt
    python examples/learned_optimizer.py --tiny
"""

from __future__ import annotations

import argparse
import tempfile

import jax
import jax.numpy as jnp
import optax

from unf import lopt, spec as spec_lib
from unf.meta import ESConfig, MetaTrainConfig, meta_train
from unf.tasks import Task, transformer_lm


def regression_task(width: int = 16, batch: int = 32) -> Task:
    """A two-layer tanh MLP fitting y = sin(3 x) on [-1, 1]: a plain pytree, labelled by hand."""

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (1, width)), "b1": jnp.zeros((width,)),
                "w2": jax.random.normal(k2, (width, 1)) / jnp.sqrt(width), "b2": jnp.zeros((1,))}

    def loss(params, batch_):
        h = jnp.tanh(batch_["x"] @ params["w1"] + params["b1"][None])
        return jnp.mean(jnp.square(h @ params["w2"] + params["b2"][None] - batch_["y"]))

    def sample_batch(key):
        x = jax.random.uniform(key, (batch, 1), minval=-1.0, maxval=1.0)
        return {"x": x, "y": jnp.sin(3.0 * x)}

    labels = {"w1": (None, "hidden"), "b1": ("hidden",), "w2": ("hidden", None), "b2": (None,)}
    spec = spec_lib.from_labels(jax.eval_shape(init, jax.random.key(0)), labels)
    return Task("sine", (("width", width),), init, loss, sample_batch, spec)


def train_with(optimizer: optax.GradientTransformation, task: Task, steps: int, seed: int = 123) -> list[float]:
    """Trains a fresh ``task`` with ``optimizer`` (the loss goes to it as optax's ``value`` extra arg)."""
    optimizer = optax.with_extra_args_support(optimizer)
    params = task.init(jax.random.key(seed))
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, key):
        loss, grads = jax.value_and_grad(task.loss)(params, task.sample_batch(key))
        updates, state = optimizer.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for i in range(steps):
        params, state, loss = step(params, state, jax.random.key(10_000 + i))
        losses.append(float(loss))
    return losses


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meta-steps", type=int, default=500)
    parser.add_argument("--out", default=None, help="run folder (checkpoints, metrics.jsonl); default a temp dir")
    parser.add_argument("--tiny", action="store_true", help="a few meta-steps with a short unroll")
    args = parser.parse_args(argv)
    meta_steps, truncation, horizon = (3, 5, 20) if args.tiny else (args.meta_steps, 10, 200)
    out = args.out or tempfile.mkdtemp(prefix="unf_example_")

    # Part 1: the shipped optimizer, for any hetnet TransformerLM. It needs the run's length for its learned
    # schedule, and reads the weights, so update() takes params (as optax.adamw does).
    lm = transformer_lm(d_model=32, layers=2, heads=4, seq=16, batch=8)
    shipped = lopt.pretrained("transformer-lm", total_steps=horizon)
    lm_losses = train_with(shipped, lm, horizon)
    print(f"TransformerLM, {horizon} steps with unf.lopt.pretrained('transformer-lm'): "
          f"loss {lm_losses[0]:.3f} -> {lm_losses[-1]:.3f}")

    # Part 2: meta-train on your own task. At initialisation the rule is exactly optax.adam(1e-3).
    task = regression_task()
    learned = lopt.EquivariantAdam(task.spec)
    cfg = MetaTrainConfig(steps=meta_steps, checkpoint_every=max(1, meta_steps // 4),
                          es=ESConfig(estimator="nres", num_particles=8, truncation=truncation, horizons=(horizon,)))
    # Checkpoints go to out/checkpoints; run this again with the same --out and it resumes.
    state = meta_train(learned, [task], cfg, out)

    optimizer = learned.opt_fn(state.meta_params, total_steps=horizon)
    learned_losses = train_with(optimizer, task, horizon)
    adam_losses = train_with(optax.adam(1e-3), task, horizon)
    print(f"sine regression, final loss after {horizon} steps: learned {learned_losses[-1]:.4f}, "
          f"adam(1e-3) {adam_losses[-1]:.4f}")
    return {"learned": learned_losses, "adam": adam_losses, "transformer": lm_losses, "out": out}


if __name__ == "__main__":
    main()
