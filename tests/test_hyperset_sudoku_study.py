"""The Hyper-SET Sudoku study's runs: a warm restart starts from the finished run's params and counts on from its
steps, and the report joins both runs' curves."""

import json

import jax
import numpy as np

from benchmarks import hyperset_sudoku as hs

TINY = ["--d-model", "8", "--heads", "2", "--iterations", "2", "--batch", "2", "--train-boards", "6",
        "--test-boards", "3", "--eval-every", "2", "--checkpoint-every", "2"]


def final_params(args, model):
    return hs.restore_params(args.runs / model, hs.configs(args)[model], args)[0]


def test_warm_restart_starts_from_the_finished_run_and_counts_on(tmp_path):
    first = ["--runs", str(tmp_path / "first"), "--steps", "4"] + TINY
    assert hs.main(["--model", "recurrent"] + first) == 0
    # With a zero learning rate the restart must keep the params it started from, bit for bit.
    warm = ["--runs", str(tmp_path / "warm"), "--steps", "2", "--lr", "0",
            "--init-from", str(tmp_path / "first")] + TINY
    assert hs.main(["--model", "recurrent"] + warm) == 0
    before, after = (final_params(hs.parse_args(a + ["--report"]), "recurrent") for a in (first, warm))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    log = (tmp_path / "warm" / "recurrent" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in log]
    assert steps == [6]
    assert hs.main(["--model", "hyperset"] + first) == 0
    assert hs.main(["--model", "hyperset"] + warm) == 0
    assert hs.main(["--report", "--out", str(tmp_path / "out")] + warm) == 0
    results = json.loads((tmp_path / "out" / "hyperset_sudoku.json").read_text())["models"]
    assert [c["step"] for c in results["recurrent transformer"]["training_curve"]] == [2, 4, 6]
    assert results["Hyper-SET"]["steps"] == 6
