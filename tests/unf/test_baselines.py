import json

import numpy as np
import pytest

from unf import baselines


def _bowl(best_lr):
    """A stand-in for training: the score is a bowl in log learning rate with its floor at ``best_lr``."""
    return lambda task, make_opt, hyper, steps, seeds, objective: float(np.log10(hyper[0] / best_lr) ** 2)


@pytest.mark.parametrize("best_lr", [3e-5, 0.3])
def test_the_grid_is_extended_past_an_edge_until_the_best_is_interior(monkeypatch, best_lr):
    monkeypatch.setattr(baselines, "_score", _bowl(best_lr))
    found = baselines.tune("x", None, None, 10, [0], (1e-3, 2e-3, 5e-3))
    assert found.edge_free
    lrs = sorted(k[0] for k in found.scores)
    assert lrs[0] < found.hyper[0] < lrs[-1]
    # Extended by half a decade at a time, and no further than needed.
    assert abs(np.log10(found.hyper[0] / best_lr)) < 0.5
    # Plain floats: a written-out grid reads as numbers.
    assert all(type(lr) is float for lr in lrs)
    assert "np.float64" not in json.dumps({str(k): v for k, v in found.scores.items()})


def test_a_grid_that_never_turns_stops_and_says_it_is_at_an_edge(monkeypatch):
    monkeypatch.setattr(baselines, "_score", _bowl(1e-12))
    found = baselines.tune("x", None, None, 10, [0], (1e-3, 2e-3))
    assert not found.edge_free
    assert len({k[0] for k in found.scores}) == 2 + baselines.MAX_EXTENSIONS


def test_an_unknown_objective_is_named():
    with pytest.raises(ValueError, match="objective must be one of"):
        baselines.tune("x", None, None, 10, [0], (1e-3,), objective="test")
