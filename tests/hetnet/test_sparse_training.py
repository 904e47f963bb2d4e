"""Sparse training: the dense warm-up runs the same params densely, the indexer learns only from its own loss, and
hetnet-train switches phase at the step asked."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hetnet import cli, sparse_training
from hetnet.config import TransformerConfig
from hetnet.models import TransformerLM

OPTIONS = (("block", 4), ("top_k", 1), ("window", 1), ("router", "indexer"), ("index_dim", 4))
CFG = TransformerConfig(d_model=16, num_heads=2, num_layers=2, max_len=32, attention="sparse",
                        attention_options=OPTIONS)
INDEX_KERNELS = ("index_query", "index_key")


@pytest.fixture(scope="module")
def setup():
    model = TransformerLM(CFG)
    params = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 33), 0, 256)
    return model, params, {"tokens": tokens}


def test_the_warm_up_trains_the_model_densely_and_the_indexer_on_dense_attention(setup):
    model, params, batch = setup
    dense = sparse_training.dense_twin(model)
    warm = sparse_training.phase_loss(model, dense=True)
    grads = jax.jit(jax.grad(warm))(params, batch)
    dense_grads = jax.jit(jax.grad(dense.loss))(params, batch)
    # Every model weight learns from the dense loss alone; the indexer's kernels only from the distillation.
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        if any(k in name for k in INDEX_KERNELS):
            assert float(jnp.abs(g).max()) > 0, name
        else:
            want = dict(jax.tree_util.tree_leaves_with_path(dense_grads))[path]
            np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-7, err_msg=name)
    @jax.jit
    def by_hand(params, batch):
        x = model.embed(params, batch["tokens"][:, :-1])
        states = dense.body.residual_states(params, x)
        return dense.loss(params, batch) + model.body.aux_loss(params, x, states=states)

    np.testing.assert_allclose(jax.jit(warm)(params, batch), by_hand(params, batch), rtol=1e-6)


def test_the_sparse_phase_fits_the_indexer_on_the_sparse_models_own_stream(setup):
    model, params, batch = setup
    loss = jax.jit(sparse_training.phase_loss(model, dense=False))
    want = jax.jit(lambda p, b: model.loss(p, b) + model.aux_loss(p, b))(params, batch)
    np.testing.assert_allclose(loss(params, batch), want, rtol=1e-6)
    plain = jax.jit(sparse_training.phase_loss(model, dense=False, indexer_weight=0.0))
    np.testing.assert_allclose(plain(params, batch), jax.jit(model.loss)(params, batch), rtol=1e-6)


def test_a_dense_model_is_refused_by_name():
    with pytest.raises(ValueError, match="attention='softmax'"):
        sparse_training.phase_loss(TransformerLM(TransformerConfig()), dense=True)
    with pytest.raises(ValueError, match="indexer_weight"):
        sparse_training.phase_loss(TransformerLM(CFG), dense=True, indexer_weight=-1.0)


TINY = ["--max-bytes", "100000", "--batch", "2", "--seq-len", "16", "--d-model", "16", "--layers", "2", "--heads",
        "2", "--eval-every", "2", "--eval-batches", "1", "--quiet", "--attention", "sparse"]
INDEXER = [a for name, value in OPTIONS for a in ("--attention-option", f"{name}={value}")]


def test_hetnet_train_warms_up_dense_then_trains_sparse(tmp_path):
    result = cli.run(cli.build_parser().parse_args(
        TINY + INDEXER + ["--steps", "3", "--dense-warmup", "2", "--eval-every", "3", "--out", str(tmp_path)]))
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("phase") for r in logged] == ["dense", "dense", None]
    assert json.loads((tmp_path / "run_config.json").read_text())["dense_warmup"] == 2  # a resume must repeat it
    fresh = TransformerLM(CFG).init(jax.random.key(0))["blocks"]["attn"]["index_key"]
    trained = result.params["blocks"]["attn"]["index_key"]
    assert np.isfinite(result.final_valid_loss) and not np.allclose(trained, fresh)


def test_hetnet_train_refuses_a_dense_warm_up_without_sparse_attention(capsys):
    args = [a for a in TINY if a not in ("--attention", "sparse")]
    assert cli.main(args + ["--steps", "2", "--dense-warmup", "1"]) == 2
    assert "--dense-warmup" in capsys.readouterr().err
