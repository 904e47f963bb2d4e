"""The README's main job runs end to end on a tiny config."""

import json

from hetnet import cli


def test_main_job_runs_and_reports_validation_loss(tmp_path, capsys):
    rc = cli.main(["--steps", "4", "--eval-every", "2", "--batch", "4", "--seq-len", "16", "--d-model", "16",
                   "--layers", "1", "--heads", "2", "--max-bytes", "200000", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "final validation loss" in out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert "valid_loss" in records[-1] and records[-1]["valid_loss"] < 6.0  # well below log(256) ~ 5.55 + slack


def test_main_job_names_a_missing_text_file(tmp_path, capsys):
    rc = cli.main(["--text", str(tmp_path / "missing.txt"), "--steps", "1"])
    assert rc == 2
    assert "missing.txt" in capsys.readouterr().err
