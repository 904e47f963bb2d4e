"""compare: meta-params of one learned optimizer share one compiled trainer, and each is still evaluated as itself."""

import dataclasses

import jax
import jax.numpy as jnp

from unf import compare, evaluate, lopt, tasks


def test_two_meta_params_of_one_optimizer_compile_one_trainer_and_keep_their_own_results():
    task = tasks.transformer_lm(d_model=8, heads=2, seq=8, batch=4)
    h = compare.HeldOut("tiny", task, 4)
    learned = lopt.EquivariantAdam(task.spec, layer_key="blocks", base="orthogonal", correction=False)
    start = lopt.orthogonal_start(learned.init_meta_params(jax.random.key(0)))
    slower = {**start, "schedule": {**start["schedule"], "log_lr": start["schedule"]["log_lr"] - jnp.log(10.0)}}
    tuned = {h.key: {"adamw+cosine": [1e-3, 0.0], "adam": [1e-3]}}
    before = evaluate._valid_trainer.cache_info().misses
    rows = compare.compare([h], [compare.LearnedEntry("start", learned, start),
                                 compare.LearnedEntry("slower", learned, slower)], [0], [100], log=lambda _: None,
                           tuned=tuned)
    # AdamW, Adam and one program for both learned entries.
    assert evaluate._valid_trainer.cache_info().misses - before == 3
    by_name = {r.optimizer: r for r in rows}
    assert by_name["start"].final != by_name["slower"].final


@dataclasses.dataclass
class Unhashable:
    """A learned optimizer of the user's own, not hashable (a plain dataclass): the protocol does not ask for it."""

    inner: object

    def opt_fn(self, meta_params, **kwargs):
        return self.inner.opt_fn(meta_params, **kwargs)


def test_an_unhashable_learned_optimizer_is_evaluated_like_its_hashable_twin():
    task = tasks.transformer_lm(d_model=8, heads=2, seq=8, batch=4)
    h = compare.HeldOut("tiny", task, 4)
    learned = lopt.EquivariantAdam(task.spec, layer_key="blocks", base="orthogonal", correction=False)
    meta = lopt.orthogonal_start(learned.init_meta_params(jax.random.key(0)))
    tuned = {h.key: {"adamw+cosine": [1e-3, 0.0], "adam": [1e-3]}}
    rows = compare.compare([h], [compare.LearnedEntry("hashable", learned, meta),
                                 compare.LearnedEntry("unhashable", Unhashable(learned), meta)], [0], [100],
                           log=lambda _: None, tuned=tuned)
    by_name = {r.optimizer: r for r in rows}
    assert by_name["unhashable"].final == by_name["hashable"].final
