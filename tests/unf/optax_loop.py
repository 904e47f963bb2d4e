"""A plain optax training loop, written the way a user would, for checking that an optimizer drops into one."""

import jax
import optax


def train(task, opt, steps: int, seed: int = 1):
    """Returns ``(params, opt_state, losses)`` after ``steps`` jitted steps of ``opt`` on ``task`` (batch ``i`` from
    ``key(i)``)."""
    return train_params(task.loss, task.init(jax.random.key(seed)), opt, steps, task.sample_batch)


def train_params(loss_fn, params, opt, steps: int, sample_batch):
    """Returns ``(params, opt_state, losses)`` after ``steps`` jitted steps of ``opt`` on ``loss_fn(params, batch)``
    from ``params`` (batch ``i`` is ``sample_batch(key(i))``)."""
    state = opt.init(params)

    @jax.jit
    def step(p, s, key):
        loss, g = jax.value_and_grad(loss_fn)(p, sample_batch(key))
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    losses = []
    for i in range(steps):
        params, state, loss = step(params, state, jax.random.key(i))
        losses.append(float(loss))
    return params, state, losses


def apply_updates_of(opt, params, grads: list):
    """Returns ``params`` after one update of ``opt`` (from a fresh state) per gradient tree in ``grads``."""
    state = opt.init(params)
    for g in grads:
        u, state = opt.update(g, state, params)
        params = optax.apply_updates(params, u)
    return params
