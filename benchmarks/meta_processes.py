"""Meta-training throughput over processes: the same ES population on 1 process and on 2 (``hetnet.launch``).

Each configuration runs ``unf-meta-train`` on the same task family, optimizer and population (``--particles``),
in a fresh run folder, and reads the meta-step times it logs (``metrics.jsonl``), leaving out the first steps
(compilation). Configurations: 1 process x 1 device, 1 process x 2 devices, 2 processes x 1 device each (CPU
devices are virtual; on a GPU host each process takes its own GPU).

    python -m benchmarks.meta_processes                 # CPU
    python -m benchmarks.meta_processes --large         # more particles and steps
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import report, timing

CONFIGS = (("1 process x 1 device", 1, 1), ("1 process x 2 devices", 1, 2), ("2 processes x 1 device", 2, 1))


def meta_train_command(out: Path, particles: int, steps: int, truncation: int) -> list[str]:
    script = Path(sys.executable).parent / "unf-meta-train"
    if not script.exists():
        raise FileNotFoundError(f"{script} not found; install the project (pip install -e .) first.")
    return [str(script), "--task", "mlp", "--optimizer", "per-parameter", "--out", str(out), "--steps", str(steps),
            "--particles", str(particles), "--truncation", str(truncation), "--horizon", "200",
            "--checkpoint-every", str(steps), "--quiet"]


def run_config(processes: int, devices: int, particles: int, steps: int, truncation: int, skip: int,
               folder: Path) -> dict:
    """Returns the meta-step times of one configuration (median over the steps after ``skip``)."""
    out = folder / f"p{processes}_d{devices}"
    command = meta_train_command(out, particles, steps, truncation)
    launcher = [sys.executable, "-m", "hetnet.launch", "--processes", str(processes), "--cpu-devices",
                str(devices), "--log-dir", str(out / "logs"), "--"]
    start = time.perf_counter()
    done = subprocess.run(launcher + command, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{processes} x {devices}: meta-training failed ({done.returncode}):\n{done.stderr[-3000:]}")
    seconds = [json.loads(line)["seconds"] for line in (out / "metrics.jsonl").read_text().splitlines()][skip:]
    median = statistics.median(seconds)
    return {"processes": processes, "devices_per_process": devices, "median_step_s": median,
            "meta_steps_per_s": 1.0 / median, "wall_s": wall, "step_seconds": seconds}


def plot(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(results)
    ax.bar(range(len(names)), [results[n]["meta_steps_per_s"] for n in names])
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("meta-steps / s")
    ax.set_title("same population, split over devices and processes")
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "more particles and meta-steps")
    args = parser.parse_args(argv)
    particles, steps, truncation = (64, 40, 50) if args.large else (16, 25, 20)
    skip = 5
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, processes, devices in CONFIGS:
            results[name] = run_config(processes, devices, particles, steps, truncation, skip, Path(tmp))
            print(f"{name}: {results[name]['meta_steps_per_s']:.2f} meta-steps/s", flush=True)
    base = results[CONFIGS[0][0]]["meta_steps_per_s"]
    rows = [[n, r["processes"], r["devices_per_process"], r["meta_steps_per_s"], r["meta_steps_per_s"] / base]
            for n, r in results.items()]
    table = report.markdown_table(["configuration", "processes", "devices per process", "meta-steps/s",
                                   "vs 1 x 1"], rows)
    table += (f"\nunf-meta-train on the mlp family, per-parameter optimizer, {particles} particles (the same "
              f"population in every row), truncation {truncation}, median over meta-steps {skip + 1}-{steps}. "
              "Started by python -m hetnet.launch; the 2-process run exchanges gradients over gloo.\n")
    command = "python -m benchmarks.meta_processes" + (" --large" if args.large else "")
    payload = {"device": timing.device_description(), "command": command, "particles": particles, "steps": steps,
               "truncation": truncation, "results": results}
    name = "meta_processes_large" if args.large else "meta_processes"
    report.publish(name, payload, table, plot(results), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
