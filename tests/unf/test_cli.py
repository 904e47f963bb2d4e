"""The console scripts run end to end on tiny budgets and fail clearly on bad input."""

import dataclasses
import json

import pytest

from unf import cli, compare, tasks
from unf.lopt import shipped


def test_recipe_meta_training_exports_the_shipped_format_and_evaluates(tmp_path, capsys, monkeypatch):
    from unf import recipes

    small = [tasks.transformer_lm(d_model=8, heads=2, seq=8, batch=4)]
    short = [compare.HeldOut("2x width", tasks.transformer_lm(d_model=16, heads=2, seq=8, batch=4), 6)]
    tiny = dataclasses.replace(recipes.recipe("transformer-lm"), train_tasks=lambda: small, heldout=lambda: short)
    monkeypatch.setitem(recipes.RECIPES, "transformer-lm", tiny)
    run = tmp_path / "run"
    assert cli.meta_train_main(["--recipe", "transformer-lm", "--optimizer", "mlp-adam", "--out", str(run), "--quiet",
                                "--steps", "2",
                                "--particles", "2", "--truncation", "2", "--horizons", "4"]) == 0
    info = json.loads((run / "export" / "info.json").read_text())
    assert info["recipe"] == "transformer-lm" and info["kind"] == "mlp-adam" and info["meta_steps"] == 2
    assert info["command"].startswith("unf-meta-train --recipe transformer-lm")
    assert {"device", "date", "commit", "es", "meta_steps_per_second"} <= set(info)
    assert cli.eval_main(["--recipe", "transformer-lm", "--meta-params", str(run / "export"), "--seeds", "2",
                          "--tuning-seeds", "1", "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "| 2x width | adamw+cosine (tuned) |" in out and "mlp-adam (2 meta-steps)" in out
    assert (tmp_path / "eval" / "loss_curves.png").stat().st_size > 0


def test_main_job_evaluates_the_shipped_optimizer_then_meta_trains_one(tmp_path, capsys, monkeypatch):
    from unf import recipes

    small = [tasks.transformer_lm(d_model=8, heads=2, seq=8, batch=4)]
    short = [compare.HeldOut("2x width", tasks.transformer_lm(d_model=16, heads=2, seq=8, batch=4), 6)]
    tiny = dataclasses.replace(recipes.recipe("transformer-lm"), train_tasks=lambda: small, heldout=lambda: short)
    monkeypatch.setitem(recipes.RECIPES, "transformer-lm", tiny)
    assert cli.main(["--out", str(tmp_path), "--seeds", "2", "--tuning-seeds", "1", "--meta-steps", "2",
                     "--quiet"]) == 0
    out = capsys.readouterr().out
    kind = shipped.info("transformer-lm")["kind"]
    assert f"| 2x width | {kind} (shipped) |" in out and f"| 2x width | {kind} (2 meta-steps) |" in out
    for part in ("shipped", "self-trained"):
        assert (tmp_path / part / "loss_curves.png").stat().st_size > 0
    # The ladder measured when the optimizer shipped: its table printed, its figure beside the results.
    table, _ = shipped.ladder("transformer-lm")
    assert "| width=256 |" in table and table.split("\n", 1)[1].strip() in out
    assert (tmp_path / "ladder.png").stat().st_size > 0
    made = json.loads((tmp_path / "meta-train" / "export" / "info.json").read_text())
    # The demonstration meta-trains the rule the way it ships (with or without the correction).
    assert made["meta_steps"] == 2
    assert made["correction"] == shipped.info("transformer-lm").get("correction", True)


def test_recipe_flags_are_checked(tmp_path, capsys):
    assert cli.meta_train_main(["--recipe", "transformer-lm", "--out", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps must be a positive integer" in capsys.readouterr().err
    assert cli.meta_train_main(["--recipe", "transformer-lm", "--out", str(tmp_path), "--truncation", "3",
                                "--horizons", "10"]) == 2
    assert "multiple of truncation" in capsys.readouterr().err
    assert cli.eval_main(["--recipe", "transformer-lm", "--out", str(tmp_path)]) == 2
    assert "give --meta-params" in capsys.readouterr().err
    assert cli.meta_train_main(["--recipe", "transformer-lm", "--optimizer", "mlp-adam", "--no-correction",
                                "--out", str(tmp_path)]) == 2
    assert "correction must be True, or False for the kinds" in capsys.readouterr().err
    for flag, value, message in (("--meta-lr", "nan", "meta_lr must be a finite number > 0"),
                                 ("--meta-lr", "-1e-3", "meta_lr must be a finite number > 0"),
                                 ("--sigma", "inf", "sigma must be a finite number > 0"),
                                 ("--rescale", "inf", "rescale must be a finite number >= 0")):
        assert cli.meta_train_main(["--recipe", "transformer-lm", "--out", str(tmp_path), f"{flag}={value}"]) == 2, flag
        assert message in capsys.readouterr().err
    assert cli.meta_train_main(["--task", "mlp", "--out", str(tmp_path), "--meta-lr", "0"]) == 2
    assert "meta_lr must be a finite number > 0, got 0.0" in capsys.readouterr().err


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


@pytest.mark.parametrize("argv,message", [
    (["--out", "x"], "one of the arguments --recipe --task is required"),
    (["--recipe", "transformer-lm", "--task", "mlp", "--out", "x"], "not allowed with argument"),
    (["--recipe", "transformer-lm", "--horizon", "10", "--out", "x"], "--horizon applies without --recipe"),
    (["--task", "mlp", "--horizons", "10", "--out", "x"], "--horizons applies without --task"),
    (["--task", "mlp", "--progress-power", "4", "--out", "x"], "--progress-power applies without --task"),
    (["--task", "mlp", "--optimizer", "unf-muon", "--out", "x"], "--optimizer must be one of"),
    (["--task", "mlp", "--no-correction", "--out", "x"], "--no-correction applies with --recipe"),
])
def test_meta_train_modes_refuse_the_other_modes_options(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli.meta_train_main(argv)
    assert message in capsys.readouterr().err


def test_a_recipe_over_several_architectures_takes_only_a_rule_without_a_correction(tmp_path, capsys):
    assert cli.meta_train_main(["--recipe", "networks", "--steps", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "several architectures" in err and "--no-correction" in err
    assert cli.meta_train_main(["--recipe", "networks", "--optimizer", "mlp-adam", "--no-correction", "--steps", "1",
                                "--out", str(tmp_path)]) == 2
    assert "correction must be True, or False for the kinds" in capsys.readouterr().err


def test_eval_modes_refuse_the_other_modes_options(capsys):
    with pytest.raises(SystemExit):
        cli.eval_main(["--task", "mlp", "--pretrained", "--out", "x"])
    assert "--pretrained applies with --recipe" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.eval_main(["--recipe", "transformer-lm", "--steps", "5", "--out", "x"])
    assert "--steps applies without --recipe" in capsys.readouterr().err


def test_the_unf_command_runs_each_console_script_as_a_subcommand(capsys):
    with pytest.raises(SystemExit):
        cli.unf_main(["meta-train", "--task", "mlp", "--no-correction", "--out", "x"])
    assert "--no-correction applies with --recipe" in capsys.readouterr().err  # meta-train's own parser answered
    with pytest.raises(SystemExit):
        cli.unf_main(["eval", "--help"])
    assert capsys.readouterr().out.startswith("usage: unf-eval")
    with pytest.raises(SystemExit):
        cli.unf_main(["train"])
    assert "invalid choice: 'train'" in capsys.readouterr().err
