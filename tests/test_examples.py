"""Every example under examples/ runs end to end at tiny sizes, so the user guide cannot rot."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_covered():
    assert {p.stem for p in EXAMPLES.glob("*.py")} == {
        "train_transformer", "weight_space_spec", "learned_optimizer", "multi_device"}


@pytest.mark.parametrize("args", [["--tiny"], ["--tiny", "--block", "hyperset", "--layers", "3"]],
                         ids=["softmax", "hyperset"])
def test_train_transformer(args):
    out = load("train_transformer").main(args)
    assert np.all(np.isfinite(out["losses"])) and out["losses"][-1] < out["losses"][0]
    assert np.isfinite(out["valid_loss"])


def test_weight_space_spec():
    out = load("weight_space_spec").main(["--tiny"])
    assert out["equivariance_error"] < 1e-5
    assert out["flax_spec"].num_leaves == 6 and out["plain_spec"].labels == ("hidden",)


def test_learned_optimizer(tmp_path):
    out = load("learned_optimizer").main(["--tiny", "--out", str(tmp_path)])
    assert np.all(np.isfinite(out["learned"])) and out["learned"][-1] < out["learned"][0]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3
    assert (tmp_path / "run_config.json").exists() and (tmp_path / "checkpoints").exists()
    lm = out["transformer"]
    assert np.all(np.isfinite(lm)) and np.mean(lm[-3:]) < np.mean(lm[:3])  # the shipped optimizer trains it


def test_multi_device():
    out = load("multi_device").main(["--tiny"])
    assert int(np.prod(list(out["mesh"].values()))) == jax.device_count()
    assert np.all(np.isfinite(out["losses"]))
    query = out["params"]["blocks"]["attn"]["query"]
    assert len(query.sharding.device_set) == jax.device_count()
