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
