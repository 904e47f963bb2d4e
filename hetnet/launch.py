"""``python -m hetnet.launch``: start one command as N local processes of one ``jax.distributed`` run.

    python -m hetnet.launch --processes 2 --cpu-devices 2 -- unf-meta-train --steps 100 --out runs/lopt

Every process gets the same command with ``HETNET_COORDINATOR`` (``127.0.0.1`` and a free port),
``HETNET_NUM_PROCESSES``, ``HETNET_PROCESS_ID`` and, with ``--cpu-devices``, ``HETNET_CPU_DEVICES`` in its
environment; :func:`hetnet.distributed.initialize` reads them. Process 0's output passes through; the others' go to
``--log-dir`` (``process_<k>.log``). If any process fails, the rest are stopped and the launcher exits with its
status, so a job killed on one process leaves no process waiting on a collective; rerunning the command resumes
from the newest checkpoint where the program checkpoints. On a cluster, run the program itself under the cluster's
launcher with ``--distributed`` instead: ``jax.distributed`` detects the processes there.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hetnet import distributed


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(process_id: int, processes: int, coordinator: str, cpu_devices: int | None) -> dict[str, str]:
    """Returns the environment of process ``process_id``: this one's plus the run's variables."""
    env = dict(os.environ)
    env.update({distributed.ENV_COORDINATOR: coordinator, distributed.ENV_NUM_PROCESSES: str(processes),
                distributed.ENV_PROCESS_ID: str(process_id)})
    if cpu_devices is not None:
        env[distributed.ENV_CPU_DEVICES] = str(cpu_devices)
    return env


def _stop(procs: list[subprocess.Popen], grace: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(command: list[str], processes: int, cpu_devices: int | None = None, log_dir: Path | None = None,
           grace: float = 10.0) -> int:
    """Runs ``command`` as ``processes`` processes of one run; returns 0, or the status of the first to fail."""
    if not command:
        raise ValueError("command is empty; give it after --, e.g. -- python -m hetnet.cli")
    if processes < 1:
        raise ValueError(f"processes must be positive, got {processes}")
    if cpu_devices is not None and cpu_devices < 1:
        raise ValueError(f"cpu_devices must be positive, got {cpu_devices}")
    if shutil.which(command[0]) is None:
        raise ValueError(f"command {command[0]!r} is neither a file nor on PATH; give an executable after --, e.g. "
                         "-- python -m hetnet.cli or -- unf-meta-train (installed by pip install -e .).")
    log_dir = Path(log_dir or "launch_logs")
    coordinator = f"127.0.0.1:{free_port()}"
    procs, logs = [], []
    try:
        for k in range(processes):
            out = None
            if k > 0:
                log_dir.mkdir(parents=True, exist_ok=True)
                out = (log_dir / f"process_{k}.log").open("w")
                logs.append(out)
            procs.append(subprocess.Popen(command, env=process_env(k, processes, coordinator, cpu_devices),
                                          stdout=out, stderr=subprocess.STDOUT if out else None))
        while True:
            codes = [p.poll() for p in procs]
            failed = [(k, c) for k, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                k, code = failed[0]
                print(f"hetnet.launch: process {k} exited with status {code}; stopping the others.", file=sys.stderr)
                _stop(procs, grace)
                return code if code > 0 else 128 - code
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop(procs, grace)
        return 130
    finally:
        for f in logs:
            f.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("hetnet.launch: error: give the command after --, e.g. python -m hetnet.launch --processes 2 -- "
              "unf-meta-train ...", file=sys.stderr)
        return 2
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="python -m hetnet.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2, help="processes to start (default 2)")
    p.add_argument("--cpu-devices", type=int, default=None, help="virtual CPU devices per process")
    p.add_argument("--log-dir", type=Path, default=Path("launch_logs"), help="where processes 1.. write output")
    args = p.parse_args(argv[:split])
    try:
        return launch(argv[split + 1:], args.processes, args.cpu_devices, args.log_dir)
    except ValueError as err:
        print(f"hetnet.launch: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
