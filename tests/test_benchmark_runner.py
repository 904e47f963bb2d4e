"""The benchmark runner refuses accelerator sizes on a CPU-only machine and reports a failing benchmark by name."""

import pytest

from benchmarks import run, transformer_step


def test_device_sizes_are_refused_without_an_accelerator(capsys):
    assert run.main(["--device"]) == 2
    assert "JAX sees only a CPU" in capsys.readouterr().err


def test_a_failing_or_slow_benchmark_is_reported_not_raised():
    failed = run.run_one("transformer_step", ("--no-such-flag",), timeout=120)
    assert failed["status"].startswith("failed") and "--no-such-flag" in failed["output_tail"]
    assert run.run_one("transformer_step", (), timeout=0.01)["status"].startswith("timed out")


def test_every_listed_benchmark_exists():
    for name in run.BENCHMARKS:
        __import__(f"benchmarks.{name}")


@pytest.mark.parametrize("kind,dtype,peak", [("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
                                             ("NVIDIA H100 PCIe", "bfloat16", 756e12), ("cpu", "bfloat16", None)])
def test_mfu_peaks_by_device(kind, dtype, peak):
    assert transformer_step.peak_flops(kind, dtype) == peak


def test_model_flops_count_matmuls_and_attention():
    cfg = transformer_step.TransformerConfig(vocab_size=100, d_model=8, num_heads=2, d_ff=32, num_layers=3, max_len=4)
    per_token = 6 * (3 * (4 * 64 + 2 * 8 * 32) + 8 * 100) + 12 * 3 * 8 * 4
    assert transformer_step.model_flops_per_step(cfg, batch=5) == per_token * 5 * 4


def test_step_cost_counts_the_training_flops_as_the_mfu_count_and_newton_schulz_on_every_hidden_matrix():
    from benchmarks import lopt_step_cost
    from unf.lopt import orthogonal
    from unf.tasks import transformer_lm

    d, layers, seq, batch = 16, 3, 8, 5
    flops = lopt_step_cost.step_flops(transformer_lm(d_model=d, layers=layers, heads=2, seq=seq, batch=batch), seq,
                                      seq * batch)
    cfg = transformer_step.TransformerConfig(vocab_size=256, d_model=d, num_heads=2, d_ff=4 * d, num_layers=layers,
                                             max_len=seq)
    assert flops["train"] == transformer_step.model_flops_per_step(cfg, batch)
    # Per layer: query, key, value and out are d x d matrices, the MLP's two d x 4d.
    per_layer = 4 * orthogonal.newton_schulz_flops(d, d) + 2 * orthogonal.newton_schulz_flops(d, 4 * d)
    assert flops["orthogonalize"] == layers * per_layer


def test_the_ladder_reads_back_only_rungs_of_the_same_meta_params_and_seeds(tmp_path):
    import json

    import numpy as np

    from benchmarks import lopt_ladder

    meta = {"a": np.arange(3.0), "b": np.ones((2, 2))}
    digest = lopt_ladder.fingerprint(meta)
    assert digest != lopt_ladder.fingerprint({"a": np.arange(3.0) + 1e-6, "b": np.ones((2, 2))})
    base = {name: {"valid_final": 1.8} for name in lopt_ladder.BASELINES}
    row = {"rung": "width=64", "task": "d64", "steps": 1000, "learned": {"valid_final": 1.7}, "baselines": base}
    # Cut short after AdamW: run again, not read back as finished.
    partial = {**row, "rung": "width=128", "task": "d128", "baselines": {"adamw+cosine": base["adamw+cosine"]}}
    path = tmp_path / "lopt_ladder.json"
    assert lopt_ladder.finished_rungs(path, digest, [1, 2], [0]) == {}
    path.write_text(json.dumps({"meta_params_digest": digest, "seeds": [1, 2], "tuning_seeds": [0],
                                "rows": [row, partial]}))
    assert lopt_ladder.finished_rungs(path, digest, [1, 2], [0]) == {("width=64", "d64", 1000): row}
    # ... but its learned runs are offered for reuse.
    assert lopt_ladder.published_rows(path, digest, [1, 2], [0])[("width=128", "d128", 1000)] == partial
    for other in ((digest[::-1], [1, 2], [0]), (digest, [1, 2, 3], [0]), (digest, [1, 2], [5])):
        assert lopt_ladder.finished_rungs(path, *other) == {}


def test_the_ladder_takes_other_widths_and_refuses_ones_the_heads_do_not_divide(capsys):
    import pytest

    from benchmarks import lopt_ladder

    widths = [r.value for r in lopt_ladder.rungs(False, widths=(48, 512)) if r.axis == "width"]
    assert widths == [48, 512]
    assert [r.value for r in lopt_ladder.rungs(False) if r.axis == "width"] == list(lopt_ladder.WIDTHS)
    with pytest.raises(SystemExit):
        lopt_ladder.main(["--widths", "30"])
    assert "--widths must be multiples of the 4 heads, got [30]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lopt_ladder.main(["--widths", "64", "--heads", "12"])
    assert "--widths must be multiples of the 12 heads, got [64]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lopt_ladder.main(["--learning-rates", "1e-3", "nan"])
    assert "--learning-rates must be finite and positive, got [0.001, nan]" in capsys.readouterr().err
    deep = [r for r in lopt_ladder.rungs(False, widths=(768,), layers=12, heads=12) if r.axis == "width"]
    assert dict(deep[0].task.config)["layers"] == 12 and dict(deep[0].task.config)["heads"] == 12
    # A larger training split is read fewer times over by the same run.
    wide = [r for r in lopt_ladder.rungs(False, widths=(32,), text_bytes=2_000_000) if r.axis == "width"][0]
    narrow = [r for r in lopt_ladder.rungs(False, widths=(32,)) if r.axis == "width"][0]
    assert 1.5 < lopt_ladder.epochs(narrow) / lopt_ladder.epochs(wide) < 2.5
    from benchmarks import lopt_networks

    digits = [r for r in lopt_networks.networks(False, None) if r.value not in ("lstm", "nnx-gpt")]
    assert [lopt_ladder.epochs(r) for r in digits] == [None] * len(digits)  # they read no text
    with pytest.raises(SystemExit):
        lopt_ladder.main(["--horizons", "1000", "1010"])
    assert "--horizons must be a multiple of 20 (the validation loss is read 20 times a run), got 1010" in (
        capsys.readouterr().err)
    with pytest.raises(SystemExit):
        lopt_ladder.main(["--text-bytes", "0"])
    assert "--text-bytes must be positive, got 0" in capsys.readouterr().err


def test_lopt_networks_reads_back_the_networks_a_run_finished_and_reruns_on_other_meta_params(tmp_path, monkeypatch):
    import json
    import shutil

    from benchmarks import lopt_ladder, lopt_networks, report

    for name in ("lopt_networks.json", "lopt_networks_baselines.json"):
        shutil.copy(report.RESULTS / name, tmp_path / name)
    committed = json.loads((tmp_path / "lopt_networks.json").read_text())

    def ran(*args, **kwargs):
        raise AssertionError("ran a network that was read back")

    monkeypatch.setattr(lopt_networks, "learned_row", ran)
    monkeypatch.setattr(lopt_ladder, "tuned_baselines", ran)
    # The networks --only leaves out keep their finished rows, in the networks' order.
    kept = [r for r in committed["rows"] if r["rung"] != "network=cnn"]
    (tmp_path / "lopt_networks.json").write_text(json.dumps({**committed, "rows": kept}))
    assert lopt_networks.main(["--out", str(tmp_path), "--only", "mlp", "lstm"]) == 0
    written = json.loads((tmp_path / "lopt_networks.json").read_text())
    assert written["rows"] == kept
    assert "network=cnn-flatten" in (tmp_path / "lopt_networks.md").read_text()
    # --rerun runs the networks it selects again and keeps the others' rows.
    reran = []

    def rerun(rung, *args, **kwargs):
        reran.append(rung.value)
        return {**next(r for r in committed["rows"] if r["rung"] == rung.label)["learned"]}

    monkeypatch.setattr(lopt_networks, "learned_row", rerun)
    monkeypatch.setattr(lopt_ladder, "tuned_baselines", lambda rung, *args, **kwargs: next(
        r for r in committed["rows"] if r["rung"] == rung.label)["baselines"])
    assert lopt_networks.main(["--out", str(tmp_path), "--only", "lstm", "--rerun"]) == 0
    assert reran == ["lstm"]
    assert [r["rung"] for r in json.loads((tmp_path / "lopt_networks.json").read_text())["rows"]] == [
        r["rung"] for r in kept]
    monkeypatch.setattr(lopt_networks, "learned_row", ran)
    monkeypatch.setattr(lopt_ladder, "tuned_baselines", ran)
    written = json.loads((tmp_path / "lopt_networks.json").read_text())
    written["meta_params_digest"] = "0" * 16
    (tmp_path / "lopt_networks.json").write_text(json.dumps(written))
    with pytest.raises(AssertionError, match="read back"):
        lopt_networks.main(["--out", str(tmp_path), "--only", "mlp"])


def test_lopt_networks_as_shipped_runs_the_rule_untuned_into_its_own_table(tmp_path, monkeypatch, capsys):
    import json
    import shutil

    from benchmarks import lopt_ladder, lopt_networks, report

    shutil.copy(report.RESULTS / "lopt_networks_baselines.json", tmp_path / "lopt_networks_baselines.json")
    committed = json.loads((report.RESULTS / "lopt_networks.json").read_text())
    asked = []

    def untuned(rung, seeds, tuning, tuned=True):
        asked.append((rung.value, tuned, seeds))
        full = next(r for r in committed["rows"] if r["rung"] == rung.label)["learned"]
        return {k: v for k, v in full.items() if k not in ("scaled", "by_role")}

    monkeypatch.setattr(lopt_networks, "learned_row", untuned)
    monkeypatch.setattr(lopt_ladder, "tuned_baselines", lambda rung, *args, **kwargs: next(
        r for r in committed["rows"] if r["rung"] == rung.label)["baselines"])
    assert lopt_networks.main(["--out", str(tmp_path), "--only", "mlp", "lstm", "--as-shipped", "--seeds", "5"]) == 0
    assert asked == [("mlp", False, [0, 1, 2, 3, 4]), ("lstm", False, [0, 1, 2, 3, 4])]
    table = (tmp_path / "lopt_networks_as_shipped.md").read_text()
    assert "network=mlp" in table and "network=lstm" in table and "scale tuned" not in table
    assert (tmp_path / "lopt_networks_as_shipped.png").exists() and not (tmp_path / "lopt_networks.json").exists()
    with pytest.raises(SystemExit):
        lopt_networks.main(["--as-shipped", "--meta-params", str(tmp_path)])
    assert "--as-shipped and --meta-params: pass one" in capsys.readouterr().err


def test_lopt_networks_tables_put_each_ratio_under_its_own_baseline():
    from benchmarks import lopt_ladder, lopt_networks

    assert lopt_ladder.BASELINES == ("adamw+cosine", "adam", "muon")
    # Baselines are stored in their tuning order (AdamW, Muon, Adam); the columns read AdamW, Adam, Muon.
    tuned = {"adamw+cosine": {"valid_final": 2.0}, "muon": {"valid_final": 4.0}, "adam": {"valid_final": 5.0}}
    assert lopt_networks._ratios({"valid_final": 1.0}, tuned) == ["0.500", "0.200", "0.250"]
    assert lopt_networks._ratios({"valid_final": 1.0}, {"adamw+cosine": {"valid_final": 2.0}}) == ["0.500", "-", "-"]


def test_lopt_networks_sets_an_exports_rule_beside_the_shipped_one(tmp_path, monkeypatch, capsys):
    import json
    import shutil

    from benchmarks import lopt_networks, report
    from unf.lopt import shipped

    for name in ("lopt_networks.json", "lopt_networks_baselines.json"):
        shutil.copy(report.RESULTS / name, tmp_path / name)
    committed = {r["rung"]: r for r in json.loads((tmp_path / "lopt_networks.json").read_text())["rows"]}

    def ran(*args, **kwargs):
        raise AssertionError("ran what the results already hold")

    monkeypatch.setattr(lopt_networks, "learned_row", ran)
    evaluated = []

    def rule_row(rung, learned, meta_params, seeds):
        evaluated.append((rung.value, seeds))
        return {**committed[rung.label]["learned"], "valid_final": 2 * committed[rung.label]["learned"]["valid_final"]}

    monkeypatch.setattr(lopt_networks, "rule_row", rule_row)
    export = shipped.WEIGHTS / "transformer-lm"
    assert lopt_networks.main(["--out", str(tmp_path), "--only", "cnn", "mlp", "--meta-params", str(export)]) == 0
    assert evaluated == [("mlp", [0, 1, 2]), ("cnn", [0, 1, 2])]
    table = (tmp_path / "lopt_networks_export.md").read_text()
    assert "| network=cnn | 500 |" in table and "| 2.000 |" in table
    written = json.loads((tmp_path / "lopt_networks_export.json").read_text())
    assert [r["rung"] for r in written["rows"]] == ["network=mlp", "network=cnn"]
    assert written["export"]["recipe"] == "transformer-lm"
    with pytest.raises(SystemExit):
        lopt_networks.main(["--out", str(tmp_path), "--meta-params", str(tmp_path / "nothing")])
    assert "--meta-params: no meta-params at" in capsys.readouterr().err
