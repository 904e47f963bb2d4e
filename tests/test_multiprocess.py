"""Runs across processes: 2 processes x 2 CPU devices (``hetnet.launch``, gloo collectives) compute what one
process with 4 devices computes, for the sharded train step and an ES meta-step; a meta-training run whose second
process is killed resumes onto the uninterrupted trajectory."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from hetnet import launch
from tests import multiprocess_worker as worker

WORKER = str(Path(worker.__file__))


def run_two_processes(tmp_path: Path, *args: str) -> int:
    return launch.launch([sys.executable, WORKER, *args], processes=2, cpu_devices=2, log_dir=tmp_path / "logs")


def logs(tmp_path: Path) -> str:
    path = tmp_path / "logs" / "process_1.log"
    return path.read_text()[-3000:] if path.exists() else ""


@pytest.fixture(scope="module", autouse=True)
def four_devices():
    if jax.device_count() != 4:
        pytest.fail("the single-process reference needs the 4 virtual devices from tests/conftest.py")


# Each launches two processes that compile the whole program (30-50 s on a 2-core CPU): run with -m slow. The default
# suite keeps a real two-process launch (test_launched_processes_see_one_run), the sharded single-process steps these
# must equal (tests/hetnet/test_sharding.py, tests/unf/test_meta.py) and the single-process kill-and-resume
# (tests/unf/test_meta.py::test_killed_run_resumes_onto_the_uninterrupted_trajectory).
@pytest.mark.slow
def test_two_processes_give_the_single_process_train_step_and_meta_gradient(tmp_path):
    assert run_two_processes(tmp_path, "steps", str(tmp_path / "steps.npz")) == 0, logs(tmp_path)
    got = np.load(tmp_path / "steps.npz")
    train = worker.train_steps()
    meta = worker.meta_step()
    np.testing.assert_allclose(got["losses"], train["losses"], rtol=1e-5)
    want = {**worker.flat(train["params"], "params"), **worker.flat(meta["meta_params"], "meta")}
    assert set(want) <= set(got.files)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(got["meta_loss"], meta["meta_loss"], rtol=1e-5)
    # The step moved the params, so agreement is not agreement at init.
    first = worker.flat(jax.jit(worker.TransformerLM(worker.CFG).init)(jax.random.key(0)), "params")
    assert any(not np.allclose(first[k], got[k]) for k in first)


@pytest.mark.slow
def test_meta_training_killed_on_one_process_resumes_exactly(tmp_path):
    run = tmp_path / "run"
    # Process 1 dies (SIGKILL) after meta-step 3; the last checkpoint is step 2; the launcher stops process 0.
    code = run_two_processes(tmp_path, "meta-train", str(run), "--die-after", "3")
    assert code != 0, "the launcher must report the killed process"
    assert run_two_processes(tmp_path, "meta-train", str(run)) == 0, logs(tmp_path)
    task, learned, cfg = worker.meta_setup()
    straight = worker.meta_train(learned, [task], cfg, tmp_path / "straight", progress=False)
    got = np.load(run / "final.npz")
    for name, value in worker.flat(jax.device_get(straight.meta_params), "meta").items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_launcher_reports_a_failing_process_and_bad_arguments(tmp_path):
    failing = [sys.executable, "-c", "import os, sys; sys.exit(3 if os.environ['HETNET_PROCESS_ID'] == '1' else 0)"]
    assert launch.launch(failing, processes=2, log_dir=tmp_path) == 3
    with pytest.raises(ValueError, match="processes must be positive, got 0"):
        launch.launch(failing, processes=0)
    assert launch.main(["--processes", "2", "python"]) == 2


def test_process_rows_split_a_batch_in_process_order():
    from hetnet.distributed import process_rows

    assert [process_rows(8, p, 4) for p in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    with pytest.raises(ValueError, match="10 rows does not split over 4 processes"):
        process_rows(10, 0, 4)


def test_launched_processes_see_one_run(tmp_path):
    probe = ("from hetnet import distributed; distributed.initialize(); import jax; "
             "print(jax.process_count(), jax.device_count(), jax.local_device_count())")
    out = subprocess.run([sys.executable, "-m", "hetnet.launch", "--processes", "2", "--cpu-devices", "2",
                          "--log-dir", str(tmp_path), "--", sys.executable, "-c", probe],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 4 2" in out.stdout


def test_distributed_without_a_cluster_says_how_to_launch(capsys):
    from hetnet import cli

    out = subprocess.run([sys.executable, "-m", "hetnet.cli", "--distributed", "--steps", "1"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "found no cluster to join" in out.stderr and "hetnet.launch" in out.stderr
    assert cli.build_parser().parse_args(["--distributed"]).distributed
