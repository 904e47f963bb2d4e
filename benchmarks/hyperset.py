"""Hyper-SET against a recurrent transformer (one shared block) at equal parameter count.

Two tasks, both embedded: scikit-learn's digits as sequences of 2x2 patches (classification), and a Sudoku-style
constraint task generated here (9x9 boards from a valid pattern under the Sudoku symmetry group, some cells blanked;
predict every blank). For each model: parameters, train-step time, accuracy at the training depth, accuracy as the
number of iterations at inference grows to twice the training depth, and Hyper-SET's energies over iterations.

    python -m benchmarks.hyperset            # CPU, a few minutes
    python -m benchmarks.hyperset --large    # wider models, longer training (GPU)

The paper's reference (one-layer recurrent models at ~2.4M parameters): CIFAR-10 90.11 (Hyper-SET) vs 89.90
(Transformer); Sudoku board accuracy 54.70 vs 49.30.
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import report, timing, training
from hetnet import embedding
from hetnet.classifier import SequenceClassifier
from hetnet.config import ClassifierConfig, TransformerConfig
from hetnet.hyperset import HyperSET
from hetnet.models import TransformerLM

PAPER = {"digits": "CIFAR-10: 90.11 vs 89.90", "sudoku": "board accuracy 54.70 vs 49.30"}


# --- Sudoku-style boards -------------------------------------------------------------------------------------------

BASE_BOARD = np.array([[(3 * (r % 3) + r // 3 + c) % 9 for c in range(9)] for r in range(9)])


def _band_order(rng) -> np.ndarray:
    bands = rng.permutation(3)
    return np.concatenate([3 * b + rng.permutation(3) for b in bands])


def sudoku_boards(rng: np.random.Generator, n: int) -> np.ndarray:
    """Returns ``n`` valid solved boards, digits 0..8: [n, 9, 9], by relabelling and permuting a base board."""
    boards = np.empty((n, 9, 9), np.int32)
    for i in range(n):
        board = rng.permutation(9)[BASE_BOARD][_band_order(rng)][:, _band_order(rng)]
        boards[i] = board.T if rng.random() < 0.5 else board
    return boards


def is_valid_board(board: np.ndarray) -> bool:
    """Returns whether a [9, 9] board of digits 0..8 has every digit once per row, column and 3x3 box."""
    boxes = board.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)
    return all(len(set(group)) == 9 for part in (board, board.T, boxes) for group in part)


def sudoku_set(seed: int, n: int, holes: int) -> dict:
    """Returns ``inputs`` [n, 81] (0 = blank, 1..9 = digit), ``targets`` [n, 81] (1..9) and ``blank`` [n, 81] bool."""
    rng = np.random.default_rng(seed)
    solved = sudoku_boards(rng, n).reshape(n, 81) + 1
    blank = np.zeros((n, 81), bool)
    for i in range(n):
        blank[i, rng.choice(81, holes, replace=False)] = True
    return {"inputs": np.where(blank, 0, solved), "targets": solved, "blank": blank}


def sudoku_loss(params, batch, cfg):
    logits = TransformerLM(cfg).apply(params, batch["inputs"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    weights = batch["blank"].astype(losses.dtype)
    return jnp.sum(losses * weights) / jnp.sum(weights)


def sudoku_accuracy(params, batch, cfg):
    """Returns (cell accuracy over blanks, board accuracy: every blank right)."""
    right = jnp.argmax(TransformerLM(cfg).apply(params, batch["inputs"]), axis=-1) == batch["targets"]
    blank = batch["blank"]
    cell = jnp.sum(right & blank) / jnp.sum(blank)
    board = jnp.mean(jnp.all(right | ~blank, axis=-1))
    return cell, board


# --- models --------------------------------------------------------------------------------------------------------


def body_param_count(params) -> int:
    body = {k: v for k, v in params.items() if k in ("shared_block", "hyperset")}
    return sum(x.size for x in jax.tree.leaves(body))


def matched_configs(base: TransformerConfig) -> dict[str, TransformerConfig]:
    """Returns the recurrent transformer and a Hyper-SET whose dictionary size makes its layer the same size."""
    recurrent = dataclasses.replace(base, block="recurrent")
    rec_params = TransformerLM(recurrent).init(jax.random.key(0))
    probe = dataclasses.replace(base, block="hyperset", d_ff=1)
    hs_params = TransformerLM(probe).init(jax.random.key(0))
    atoms = max(1, round((body_param_count(rec_params) - body_param_count(hs_params)) / base.d_model) + 1)
    return {"recurrent transformer": recurrent, "Hyper-SET": dataclasses.replace(base, block="hyperset", d_ff=atoms)}


def energy_curve(params, x: jax.Array, cfg: TransformerConfig, iterations: int) -> dict[str, list[float]]:
    """Returns Hyper-SET's mean energies per token before each iteration and after the last."""
    x = embedding.add_positions(params["positions"], x)
    layer = HyperSET(dataclasses.replace(cfg, num_layers=iterations))
    run = jax.jit(lambda p, x: layer.iterate(p, x, record_energies=True)[1])
    energies = run(params["hyperset"], x)
    return {k: (jnp.mean(v, axis=1) / x.shape[1]).tolist() for k, v in energies.items()}


def digits_task(base: TransformerConfig, steps: int, batch: int) -> dict:
    xs, ys, valid = training.digit_patches()
    base = dataclasses.replace(base, causal=False, max_len=xs.shape[1])
    results = {}
    for name, body in matched_configs(base).items():
        cfg = ClassifierConfig(body, num_classes=10, input_dim=xs.shape[2])
        params = SequenceClassifier(cfg).init(jax.random.key(0))
        params, step_s = training.train(lambda p, b, cfg=cfg: SequenceClassifier(cfg).loss(p, b), params,
                                        training.digit_sampler(xs, ys, batch), steps, 3e-3, f"digits {name}",
                                        weight_decay=0.01)
        by_depth = {}
        for t in range(1, 2 * body.num_layers + 1):
            deep = dataclasses.replace(cfg, backbone=dataclasses.replace(body, num_layers=t))
            logits = jax.jit(lambda p, x, deep=deep: SequenceClassifier(deep).apply(p, x))(params, valid["inputs"])
            by_depth[t] = float(jnp.mean(jnp.argmax(logits, -1) == valid["labels"]))
        entry = {"params": sum(x.size for x in jax.tree.leaves(params)), "layer_params": body_param_count(params),
                 "step_ms": step_s * 1e3, "accuracy": by_depth[body.num_layers], "accuracy_by_iterations": by_depth}
        if body.block == "hyperset":
            x = valid["inputs"] @ params["inputs"]
            entry["energies"] = energy_curve(params, x, body, 2 * body.num_layers)
        results[name] = entry
    return {"train_iterations": base.num_layers, "steps": steps, "batch": batch, "models": results}


def sudoku_task(base: TransformerConfig, steps: int, batch: int, holes: int) -> dict:
    train_boards = sudoku_set(0, 20000, holes)
    valid = {k: jnp.asarray(v) for k, v in sudoku_set(1, 1000, holes).items()}
    base = dataclasses.replace(base, vocab_size=10, causal=False, max_len=81)
    results = {}
    for name, cfg in matched_configs(base).items():
        params = TransformerLM(cfg).init(jax.random.key(0))

        def sample(rng):
            idx = rng.integers(0, len(train_boards["inputs"]), batch)
            return {k: jnp.asarray(v[idx]) for k, v in train_boards.items()}

        params, step_s = training.train(lambda p, b, cfg=cfg: sudoku_loss(p, b, cfg), params, sample, steps, 3e-3,
                                        f"sudoku {name}", weight_decay=0.01)
        by_depth = {}
        for t in range(1, 2 * cfg.num_layers + 1):
            deep = dataclasses.replace(cfg, num_layers=t)
            cell, board = jax.jit(lambda p, b, deep=deep: sudoku_accuracy(p, b, deep))(params, valid)
            by_depth[t] = {"cell": float(cell), "board": float(board)}
        entry = {"params": sum(x.size for x in jax.tree.leaves(params)), "layer_params": body_param_count(params),
                 "step_ms": step_s * 1e3, "accuracy": by_depth[cfg.num_layers]["board"],
                 "cell_accuracy": by_depth[cfg.num_layers]["cell"], "accuracy_by_iterations": by_depth}
        if cfg.block == "hyperset":
            x = embedding.embed_tokens(params["tokens"], valid["inputs"][:200], jnp.float32)
            entry["energies"] = energy_curve(params, x, cfg, 2 * cfg.num_layers)
        results[name] = entry
    return {"train_iterations": base.num_layers, "steps": steps, "batch": batch, "holes": holes, "models": results}


def plot(tasks: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, (task, res) in zip(axes[:2], tasks.items()):
        for name, entry in res["models"].items():
            by_depth = sorted((int(t), _scalar(a)) for t, a in entry["accuracy_by_iterations"].items())
            depths, acc = zip(*by_depth)
            ax.plot(depths, acc, "o-", label=name)
        ax.axvline(res["train_iterations"], color="grey", ls=":", label="training depth")
        ax.set_xlabel("iterations at inference")
        ax.set_ylabel("board accuracy" if task == "sudoku" else "accuracy")
        ax.set_title(task)
        ax.legend()
    for task, res in tasks.items():
        energies = res["models"]["Hyper-SET"]["energies"]
        for term, symbol, ls in (("attention", "E_ATTN", "-"), ("feedforward", "E_FF", "--")):
            curve = np.asarray(energies[term])
            axes[2].plot(curve - curve[0], ls, label=f"{task}: {symbol}")
    axes[2].axvline(tasks["digits"]["train_iterations"], color="grey", ls=":")
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("energy per token - start")
    axes[2].set_title("trained Hyper-SET energies")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "wider models and longer training (GPU)")
    args = parser.parse_args(argv)
    width = dict(d_model=128, num_heads=8, d_ff=256) if args.large else dict(d_model=64, num_heads=4, d_ff=128)
    base = TransformerConfig(num_layers=4, **width)
    tasks = {
        "digits": digits_task(base, steps=3000 if args.large else 800, batch=64),
        "sudoku": sudoku_task(base, steps=8000 if args.large else 1500, batch=64, holes=20),
    }
    rows = []
    for task, res in tasks.items():
        for name, e in res["models"].items():
            rows.append([task, name, e["params"], e["layer_params"], e["step_ms"], e["accuracy"],
                         e.get("cell_accuracy", "-"), max(_scalar(a) for a in e["accuracy_by_iterations"].values()),
                         PAPER[task]])
    table = report.markdown_table(
        ["task", "model", "params", "layer params", "train step ms", "accuracy at training depth",
         "blank-cell accuracy", "best accuracy over 1..2T iterations", "paper (Hyper-SET vs Transformer)"], rows
    )
    table += (f"\nBoth bodies run T = {base.num_layers} iterations of one shared layer when trained; accuracy is on "
              "held-out digits / 1,000 held-out boards (Sudoku: board accuracy = every blank right, "
              f"{tasks['sudoku']['holes']} blanks per board).\n")
    command = "python -m benchmarks.hyperset" + (" --large" if args.large else "")
    payload = {"device": timing.device_description(), "command": command, "tasks": tasks}
    report.publish("hyperset_large" if args.large else "hyperset", payload, table, plot(tasks), args.out)
    return 0


def _scalar(acc) -> float:
    return acc["board"] if isinstance(acc, dict) else acc


if __name__ == "__main__":
    sys.exit(main())
