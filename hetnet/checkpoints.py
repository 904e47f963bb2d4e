"""Resumable runs: orbax checkpoints of a run's state, the settings a resume must match, and a metrics log that a
resume rewinds to its checkpoint; :func:`open_run` puts them together for a run folder."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """Orbax-managed checkpoints of the run state under ``directory`` (the newest ``keep`` are kept).

    Every process of a multi-process run takes part in :meth:`save` and :meth:`restore`.
    """

    def __init__(self, directory: Path, keep: int = 2):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state))
        self.manager.wait_until_finished()

    def restore(self, step: int, like):
        """Returns the state saved at ``step``, shaped (and sharded) like ``like``; a damaged checkpoint raises a
        ValueError naming it."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        with _held_stderr() as held:
            try:
                return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as err:  # noqa: BLE001 - orbax raises many kinds for a damaged checkpoint
                failure = err
                # The abandoned reads' callbacks find orbax's event loop closed and print a traceback each, from
                # storage threads, after the failure, and collecting them prints more: all of it is held and
                # dropped, the manager closed so its threads do not outlive the run, until the stream falls quiet
                # (later on a loaded machine than on an idle one).
                held.drop()
                self.close()
                _silence_abandoned_reads()
                held.wait_until_quiet(ABANDONED_READS_SECONDS, ABANDONED_READS_MOST_SECONDS)
        # Only the first line of orbax's message is kept (the rest is kilobytes of storage specs).
        text = str(failure).strip()
        first = text.splitlines()[0].split(" See full")[0][:200] if text else ""
        raise ValueError(f"checkpoint {step} in {self.directory} could not be restored ({type(failure).__name__}: "
                         f"{first}); it is damaged, incomplete or of another run. Delete that step's folder to "
                         "resume from an earlier one.") from None

    def close(self) -> None:
        self.manager.close()


ABANDONED_READS_SECONDS = 0.5
ABANDONED_READS_MOST_SECONDS = 10.0


class _Held:
    """The stderr :func:`_held_stderr` holds: ``drop()`` discards it at the end; ``wait_until_quiet(quiet, most)``
    returns once nothing has been written for ``quiet`` seconds (or after ``most``)."""

    def __init__(self, file):
        self._file = file
        self.keep = True

    def drop(self) -> None:
        self.keep = False

    def wait_until_quiet(self, quiet: float, most: float) -> None:
        start = last_change = time.monotonic()
        size = os.fstat(self._file.fileno()).st_size
        while time.monotonic() - start < most:
            time.sleep(min(0.1, quiet))
            now, current = time.monotonic(), os.fstat(self._file.fileno()).st_size
            if current != size:
                size, last_change = current, now
            elif now - last_change >= quiet:
                return


@contextlib.contextmanager
def _held_stderr():
    """Holds what the process writes to its stderr (file descriptor 2, threads outside Python included) in a
    temporary file and writes it out at the end, unless the :class:`_Held` it yields was dropped."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as file:
        held = _Held(file)
        os.dup2(file.fileno(), 2)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if held.keep:
                file.seek(0)
                os.write(2, file.read())


def _silence_abandoned_reads() -> None:
    """A failed orbax restore leaves its other array reads suspended; each one, when collected, prints the same
    storage error again as an ignored exception (kilobytes at exit). Those are dropped; every other ignored exception
    still reaches the hook that was in place."""
    previous = sys.unraisablehook

    def hook(unraisable):
        target = unraisable.object
        if isinstance(target, types.CoroutineType) and "orbax" in target.cr_code.co_filename:
            return
        previous(unraisable)

    sys.unraisablehook = hook
    gc.collect()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drops the lines of the JSON-lines log ``path`` whose ``"step"`` is past ``last_step``.

    A killed run may have logged steps after its last checkpoint; a resume replays them.
    """
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def check_resume(path: Path, description: dict, free: tuple[str, ...] = ()) -> None:
    """Raises ValueError unless the settings saved at ``path`` (``run_config.json``) equal ``description``, apart
    from the keys in ``free`` (those a resumed run may change, such as how many steps it plans)."""
    if not path.exists():
        raise ValueError(f"{path.parent} holds checkpoints but no {path.name}; it was not written by this version. "
                         "Start a new run folder.")
    saved = json.loads(path.read_text())
    changed = {k: (saved.get(k), v) for k, v in description.items() if k not in free and saved.get(k) != v}
    if changed:
        lines = ", ".join(f"{k}: checkpointed {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"cannot resume the run in {path.parent} with other settings ({lines}). Rerun with the "
                         "checkpointed settings, or use a new run folder.")


def open_run(out: Path, description: dict, state, *, free: tuple[str, ...] = (), main: bool = True,
             config_name: str = "run_config.json", metrics_name: str = "metrics.jsonl",
             logged_offset: int = 0) -> tuple[object, int, Checkpoints]:
    """Opens the run folder ``out``: returns ``(state, steps done, checkpoints)``.

    A new folder (no checkpoint) gets ``description`` written to ``config_name`` and an empty ``metrics_name`` log,
    and ``state`` comes back as given with 0 steps done. Otherwise the settings saved there must equal
    ``description`` (apart from the keys in ``free``), the newest checkpoint is restored shaped like ``state``, and
    the log is rewound to it (its lines carry ``"step"``: steps done plus ``logged_offset``). Only the ``main``
    process writes files; every process restores.
    """
    out = Path(out)
    checkpoints = Checkpoints(out / "checkpoints")
    config_path, metrics_path = out / config_name, out / metrics_name
    start = checkpoints.latest()
    if start is None:
        if main:
            out.mkdir(parents=True, exist_ok=True)
            config_path.write_text(json.dumps(description, indent=1) + "\n")
            metrics_path.write_text("")
        return state, 0, checkpoints
    try:
        check_resume(config_path, description, free)
    except ValueError:
        checkpoints.close()
        raise
    state = checkpoints.restore(start, state)
    if main:
        truncate_metrics(metrics_path, start + logged_offset)
    return state, start, checkpoints
