"""Runs every benchmark, each in its own process under a time limit, then updates docs/results.md.

    python -m benchmarks.run                    # CPU sizes
    python -m benchmarks.run --device           # accelerator sizes (each benchmark's --large), on a GPU or TPU
    python -m benchmarks.run --only transformer_step sparse_attention

Every benchmark writes its results (JSON with the device named, a markdown table, a PNG) under
benchmarks/results/; accelerator-sized runs write ``<name>_large``. A summary of what ran, how long it took and
what failed goes to ``benchmarks/results/run[_device].json``. Long studies that train for hours (the learned
optimizer against AdamW, the paper-setup runs, the long-context study) are not in the list: their own commands, with
checkpoints, make them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks import collect
from benchmarks.report import RESULTS

# name -> (arguments at CPU sizes, arguments at accelerator sizes)
BENCHMARKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "transformer_step": ((), ("--large",)),
    "compile_depth": ((), ("--large",)),
    "first_step": ((), ("--large",)),
    "sparse_attention": ((), ("--large",)),
    "unf_layer": ((), ("--channels", "32")),
    "oversmoothing": ((), ("--large",)),
    "hyperset": ((), ("--large",)),
    "linear_attention_optim": ((), ("--large",)),
    "meta_processes": ((), ("--large",)),
    "lopt_step_cost": ((), ("--large",)),
}


def accelerator() -> str | None:
    """Returns the default backend's platform when it is an accelerator, else None (checked in a subprocess so this
    process never starts a backend)."""
    probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"], capture_output=True,
                           text=True, timeout=300)
    platform = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else "unknown"
    return None if platform == "cpu" else platform


def run_one(name: str, args: tuple[str, ...], timeout: float) -> dict:
    """Runs benchmark ``name``; returns its status (ok, failed, timed out), seconds and output tail."""
    command = [sys.executable, "-m", f"benchmarks.{name}", *args]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        status = "ok" if done.returncode == 0 else f"failed ({done.returncode})"
        tail = (done.stdout + done.stderr)[-2000:]
    except subprocess.TimeoutExpired as err:
        status, tail = f"timed out after {timeout:.0f} s", str(err.stdout or "")[-2000:]
    return {"command": " ".join(["python", "-m", f"benchmarks.{name}", *args]), "status": status,
            "seconds": round(time.perf_counter() - start, 1), "output_tail": tail}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", action="store_true", help="accelerator sizes; refused where JAX sees only a CPU")
    parser.add_argument("--only", nargs="+", choices=tuple(BENCHMARKS), default=None, help="run these only")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds each benchmark may take (default 600)")
    args = parser.parse_args(argv)
    platform = None
    if args.device:
        platform = accelerator()
        if platform is None:
            print("benchmarks.run: error: --device runs accelerator-sized benchmarks, but JAX sees only a CPU here; "
                  "run without --device, or on a GPU/TPU host.", file=sys.stderr)
            return 2
    summary = {"device": platform or "cpu", "benchmarks": {}}
    for name in args.only or BENCHMARKS:
        bench_args = BENCHMARKS[name][1 if args.device else 0]
        print(f"{name} {' '.join(bench_args)} ...", flush=True)
        summary["benchmarks"][name] = result = run_one(name, bench_args, args.timeout)
        print(f"  {result['status']} in {result['seconds']} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("run_device.json" if args.device else "run.json")
    path.write_text(json.dumps(summary, indent=1) + "\n")
    collect.main([])
    failed = [n for n, r in summary["benchmarks"].items() if r["status"] != "ok"]
    print(f"wrote {path}; docs/results.md updated" + (f"; not ok: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
