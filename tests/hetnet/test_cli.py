"""hetnet-train: a tiny run with a chosen attention variant and body; bad settings end with a message, not a trace."""

import json
import subprocess
import sys
import math

import jax
import numpy as np
import pytest

from hetnet import cli

TINY = ["--max-bytes", "100000", "--steps", "3", "--batch", "2", "--seq-len", "16", "--d-model", "16", "--layers",
        "2", "--heads", "2", "--eval-every", "3", "--eval-batches", "1", "--quiet"]


def test_runs_sparse_attention_in_a_recurrent_body(capsys):
    args = cli.build_parser().parse_args(
        TINY + ["--attention", "sparse", "--attention-option", "block=4", "--attention-option", "top_k=1",
                "--block", "recurrent"])
    result = cli.run(args)
    assert math.isfinite(result.final_valid_loss) and result.steps == 3
    assert "final validation loss" in capsys.readouterr().out


@pytest.mark.parametrize("text,want", [("top_k=8", ("top_k", 8)), ("lambda=0.4", ("lambda", 0.4)),
                                       ("normalize=false", ("normalize", False)), ("feature_map=relu",
                                                                                   ("feature_map", "relu"))])
def test_attention_options_parse_to_typed_values(text, want):
    assert cli._option(text) == want


def test_bad_settings_exit_with_a_message(capsys):
    assert cli.main(TINY + ["--attention", "sparse", "--attention-option", "top_k=-1"]) == 2
    assert "top_k" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(TINY + ["--attention-option", "novalue"])


@pytest.mark.parametrize("flag", ["--steps", "--batch", "--seq-len", "--eval-every", "--eval-batches"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_non_positive_counts_are_refused_by_the_parser(flag, value, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(TINY + [flag, value])
    assert "expected a positive integer" in capsys.readouterr().err


def test_a_misspelt_attention_option_is_refused(capsys):
    assert cli.main(TINY + ["--attention", "sparse", "--attention-option", "topk=8"]) == 2
    assert "has no option 'topk'" in capsys.readouterr().err


def test_sharded_run_over_a_mesh_gives_the_single_device_losses():
    base = TINY + ["--batch", "4", "--heads", "4"]
    single = cli.run(cli.build_parser().parse_args(base))
    sharded = cli.run(cli.build_parser().parse_args(base + ["--mesh", "2", "2"]))
    assert math.isclose(sharded.final_valid_loss, single.final_valid_loss, rel_tol=1e-5)
    assert math.isclose(sharded.final_train_loss, single.final_train_loss, rel_tol=1e-5)


def test_a_mesh_larger_than_the_devices_is_refused(capsys):
    assert cli.main(TINY + ["--mesh", "4", "4"]) == 2
    assert "needs 16 devices; 4 exist" in capsys.readouterr().err


def test_a_stopped_run_resumes_to_the_unbroken_result(tmp_path, capsys):
    def run(out, steps, *extra):
        return cli.run(cli.build_parser().parse_args(
            TINY + ["--steps", str(steps), "--eval-every", "2", "--checkpoint-every", "2", "--out", str(out), *extra]))

    unbroken = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    # A run killed after logging step 3 but before its next checkpoint: the resume rewinds the log to step 2.
    with (tmp_path / "b" / "metrics.jsonl").open("a") as log:
        log.write('{"step": 3, "train_loss": 9.0}\n')
    resumed = run(tmp_path / "b", 4)
    assert "resuming" in capsys.readouterr().out
    assert resumed.final_valid_loss == unbroken.final_valid_loss
    for a, b in zip(jax.tree.leaves(unbroken.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    logged = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]
    finished = run(tmp_path / "b", 4)  # nothing left: reports the finished run's loss
    assert finished.final_valid_loss == unbroken.final_valid_loss
    with pytest.raises(ValueError, match="lr: checkpointed 0.003, now 0.01"):
        run(tmp_path / "b", 6, "--lr", "0.01")
    with pytest.raises(ValueError, match="past --steps 2"):
        run(tmp_path / "b", 2)
    for f in (tmp_path / "b" / "checkpoints" / "4").rglob("*"):
        if f.is_file() and f.parent.name == "d":  # the array data, cut short as a killed copy leaves it
            f.write_bytes(f.read_bytes()[:50])
    # As a user meets it: the command's whole output is the one message, without orbax's storage specs or the
    # abandoned reads' tracebacks at exit.
    done = subprocess.run([sys.executable, "-m", "hetnet.cli", *TINY, "--steps", "6", "--eval-every", "2",
                           "--checkpoint-every", "2", "--out", str(tmp_path / "b")], capture_output=True, text=True)
    assert done.returncode == 2 and "checkpoint 4" in done.stderr and "could not be restored" in done.stderr
    assert len(done.stderr) < 600 and "TensorStore" not in done.stderr and "Traceback" not in done.stderr


def test_a_text_file_shorter_than_a_window_names_the_split_and_seq_len(tmp_path, capsys):
    text = tmp_path / "short.txt"
    text.write_text("x" * 100)
    args = [a for a in TINY if a not in ("--max-bytes", "100000")]
    assert cli.main(args + ["--text", str(text)]) == 2
    err = capsys.readouterr().err
    assert "validation split" in err and "--seq-len 16" in err


def test_launch_names_a_missing_command(capsys):
    from hetnet import launch

    assert launch.main(["--processes", "2", "--", "no-such-command"]) == 2
    assert "'no-such-command' is neither a file nor on PATH" in capsys.readouterr().err
