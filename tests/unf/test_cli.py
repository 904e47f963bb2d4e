"""The console scripts run end to end on tiny budgets and fail clearly on bad input."""

import json

from unf import cli


def test_main_job_meta_trains_and_evaluates(tmp_path, capsys):
    rc = cli.main(["--task", "mlp", "--out", str(tmp_path), "--quiet", "--steps", "2", "--particles", "4",
                   "--truncation", "3", "--horizon", "6", "--eval-steps", "6", "--seeds", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| task | optimizer | final train loss | mean train loss |" in out
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())["rows"]
    assert {r["optimizer"].split(" ")[0] for r in rows} == {"adam", "unf", "mlp"}
    assert len({r["task"] for r in rows}) == 2  # the training width and one twice as wide
    assert (tmp_path / "eval" / "loss_curves.png").stat().st_size > 0


def test_meta_train_and_eval_scripts(tmp_path, capsys):
    run = tmp_path / "sgdm"
    assert cli.meta_train_main(["--task", "mlp", "--optimizer", "sgdm", "--out", str(run), "--quiet", "--steps", "2",
                                "--particles", "2", "--truncation", "2", "--horizon", "4"]) == 0
    info = json.loads((run / "meta_params" / "info.json").read_text())
    assert info["optimizer"] == "sgdm" and info["meta_steps"] == 2
    assert cli.eval_main(["--meta-params", str(run / "meta_params"), "--task", "mlp", "--steps", "4", "--seeds", "2",
                          "--out", str(tmp_path / "eval")]) == 0
    assert "sgdm (meta-trained 2 steps)" in capsys.readouterr().out


def test_eval_names_missing_meta_params(tmp_path, capsys):
    assert cli.eval_main(["--meta-params", str(tmp_path / "nothing"), "--task", "mlp", "--out", str(tmp_path)]) == 2
    assert "nothing" in capsys.readouterr().err
