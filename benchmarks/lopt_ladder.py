"""The shipped learned optimizer on a ladder of held-out transformers far past its meta-training, on held-out loss.

Rungs change one thing at a time from a two-layer, four-head byte-level TransformerLM: the width (d_model 32 to 256;
meta-training saw 8-64), the run length, the depth and the variant (grouped-query attention, linear attention,
SwiGLU, LayerNorm). On each rung, AdamW + warm-up + cosine, constant-lr Adam and Muon (``optax.contrib.muon`` on the
hidden matrices, AdamW on the rest, warm-up + cosine) are each tuned on the validation loss of seeds not used for
evaluation, over a learning-rate grid extended until its best value is interior; then every optimizer trains the
evaluation seeds and is scored by its final loss on held-out files of the standard library (text never trained on).
The learned optimizer runs as a user would drop it in: ``unf.lopt.pretrained("transformer-lm", total_steps=T)``,
its own learned schedule, nothing tuned.

Reported per rung: final validation loss (mean and standard error over seeds), its ratio to each tuned baseline,
the speed-up to AdamW's final validation loss (AdamW's steps over the steps the learned optimizer needs to reach it,
read off validation curves), divergences, and the step time relative to Adam's.

    python -m benchmarks.lopt_ladder                   # CPU sizes (the rungs below, 500-2,000 steps)
    python -m benchmarks.lopt_ladder --large           # the full ladder: sequence 128, 2,000-5,000 steps
    python -m benchmarks.lopt_ladder --steps 1000 --horizons 5000 --horizon-width 64 --seeds 3 \
        --out benchmarks/results/lopt_ladder_1000      # longer runs at CPU widths; --only picks rungs, in order
    python -m benchmarks.lopt_ladder --widths 32 64 128 256 512 ...   # width rungs past the default four
    python -m benchmarks.lopt_ladder --large --widths 768 --layers 12 --heads 12 --only width=768 \
        --learning-rates 2e-4 5e-4 1e-3 2e-3 --out benchmarks/results/lopt_ladder_768   # GPT-2-small shape (a GPU)

Reported per rung besides: the tokens a run reads over its training split's size (``epochs``), since a model that
reads a small split many times over measures overfitting as much as training; ``--text-bytes`` enlarges the split.

Tuned baselines are cached in ``lopt_ladder_baselines[_large].json`` beside the results (keyed by rung and
settings), so re-evaluating a new learned optimizer costs only its own runs; ``--retune`` ignores the cache. A rung
the results in ``--out`` already hold for the same meta-params (by content), seeds and tuning seeds is read back,
not run again, so a run cut short resumes where it stopped; ``--rerun`` runs every rung chosen. Within a rung the
learned optimizer runs first and the table is written after each baseline (AdamW, then Muon, then Adam), so a run cut
short by a lease's end still holds the comparisons it finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import lopt_step_cost, report, timing
from unf import baselines, compare, evaluate, recipes
from unf.lopt import shipped
from unf.tasks import text, transformer_lm
from unf.tasks.base import Task

POINTS = 20
WARMUP = 0.05
LEARNING_RATES = (1e-3, 2e-3, 5e-3)


@dataclasses.dataclass(frozen=True)
class Rung:
    """One held-out training problem: what it varies (``axis``: width, horizon, depth, variant) and its value."""

    axis: str
    value: object
    task: Task
    steps: int

    @property
    def label(self) -> str:
        return f"{self.axis}={self.value}"


WIDTHS = (32, 64, 128, 256)


def rungs(large: bool, steps: int | None = None, horizons: tuple[int, ...] | None = None,
          horizon_width: int | None = None, widths: tuple[int, ...] | None = None, layers: int = 2,
          heads: int = 4, text_bytes: int = text.TEXT_BYTES) -> list[Rung]:
    """Returns the ladder: CPU sizes, or with ``large`` the full one (sequence 128, batch 16, longer runs); ``steps``
    (the run length of every rung but the horizon ones), ``horizons``, ``horizon_width`` and ``widths`` (the d_model
    of the width rungs, default ``WIDTHS``) override the sizing's; ``layers`` and ``heads`` are the width rungs'
    (the other rungs keep two layers and four heads, so they stay one change away from the base model);
    ``text_bytes`` is every rung's standard-library budget (:func:`unf.tasks.transformer_lm`)."""
    seq, batch, default_steps, default_width = (128, 16, 2000, 64) if large else (64, 8, 500, 32)
    steps = steps or default_steps
    horizon_width = horizon_width or default_width
    base = dict(layers=2, heads=4, seq=seq, batch=batch, text_bytes=text_bytes)
    out = [Rung("width", d, transformer_lm(d_model=d, **{**base, "layers": layers, "heads": heads}), steps)
           for d in widths or WIDTHS]
    horizons = horizons or ((5000,) if large else (1000, 2000))
    out += [Rung("horizon", h, transformer_lm(d_model=horizon_width, **base), h) for h in horizons]
    out.append(Rung("depth", 8, transformer_lm(d_model=64 if large else 32, **{**base, "layers": 8}), steps // 2 * 2))
    width = 64
    out += [
        Rung("variant", "gqa", transformer_lm(d_model=width, kv_heads=2, **base), steps),
        Rung("variant", "linear attention", transformer_lm(d_model=width, attention="linear", **base), steps),
        Rung("variant", "swiglu", transformer_lm(d_model=width, ffn="swiglu", **base), steps),
        Rung("variant", "layernorm", transformer_lm(d_model=width, norm="layer", **base), steps),
    ]
    return out


def _stats(valid: np.ndarray, train: np.ndarray) -> dict:
    finals = valid[:, -1]
    finite = bool(np.all(np.isfinite(finals)))
    diverged = int(np.sum(~np.isfinite(finals) | (finals > train[:, 0])))
    se = float(np.std(finals, ddof=1) / np.sqrt(len(finals))) if len(finals) > 1 and finite else 0.0
    return {"valid_final": float(np.mean(finals)) if finite else float("inf"), "valid_se": se, "diverged": diverged,
            "valid_curve": np.mean(valid, axis=0).tolist(), "seeds": int(valid.shape[0])}


BASELINES = ("adamw+cosine", "adam", "muon")
# Tuned in this order, so a run cut short has the baselines users weigh most.
TUNING_ORDER = ("adamw+cosine", "muon", "adam")


def _baseline_entries(rung: Rung, learning_rates: tuple[float, ...] = LEARNING_RATES):
    lrs = learning_rates
    return {
        "adamw+cosine": (lambda s: baselines.tune_adamw_cosine(rung.task, rung.steps, s, "valid", lrs, (WARMUP,)),
                         baselines.adamw_cosine(rung.steps)),
        "adam": (lambda s: baselines.tune_constant_adam(rung.task, rung.steps, s, "valid", lrs),
                 baselines.constant_adam),
        "muon": (lambda s: baselines.tune_muon(rung.task, rung.steps, s, "valid", lrs, (WARMUP,)),
                 baselines.muon(rung.task.spec, rung.steps)),
    }


def tuned_baselines(rung: Rung, seeds: list[int], tuning_seeds: list[int], cache: dict,
                    learning_rates: tuple[float, ...] = LEARNING_RATES,
                    on_baseline: Callable[[dict], None] = lambda rows: None) -> dict:
    """Returns ``{name: row}`` for the tuned baselines on ``rung``, from ``cache`` where it holds this rung;
    ``learning_rates`` is the grid each tuning starts from (extended past an edge), and ``on_baseline(rows so far)``
    is called after each baseline, the cache updated, so a run cut short keeps the baselines it finished."""
    key = f"{rung.task.label} steps={rung.steps} seeds={seeds} tuning={tuning_seeds}"
    if set(cache.get(key, {})) >= set(BASELINES):
        return cache[key]
    # The tuning depends on the tuning seeds alone: a cached tuning evaluated on other seeds is reused, so more
    # evaluation seeds cost only their own runs.
    earlier = next((rows for k, rows in cache.items() if k.startswith(f"{rung.task.label} steps={rung.steps} seeds=")
                    and k.endswith(f" tuning={tuning_seeds}") and k != key), {})
    rows = cache.setdefault(key, {})
    entries = _baseline_entries(rung, tuple(learning_rates))
    for name in TUNING_ORDER:
        if name in rows:
            continue
        tune, make = entries[name]
        if name in earlier:
            tuned = {k: earlier[name][k] for k in ("hyper", "edge_free", "grid")}
        else:
            print(f"  [{rung.label}] tuning {name}", flush=True)
            found = tune(tuning_seeds)
            tuned = {"hyper": list(found.hyper), "edge_free": found.edge_free,
                     "grid": {str(k): v for k, v in found.scores.items()}}
        print(f"  [{rung.label}] evaluating {name} on seeds {seeds}", flush=True)
        train, valid = evaluate.train_valid_losses(rung.task, make, jnp.asarray(tuned["hyper"], jnp.float32),
                                                   rung.steps, seeds, points=POINTS)
        rows[name] = {**_stats(valid, train), **tuned}
        on_baseline(rows)
    return rows


def load_learned(folder: Path | None) -> tuple[Any, Any, dict]:
    """Returns ``(learned optimizer, meta_params, info)``: the shipped optimizer's, or an export folder's (the
    shipped format, as ``unf-meta-train --recipe`` writes)."""
    return recipes.load_export(folder if folder is not None else shipped.WEIGHTS / "transformer-lm")


def fingerprint(meta_params) -> str:
    """Returns a digest of the meta-params' values: results of other meta-params are never read back as these."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(meta_params):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:16]


def published_rows(path: Path, meta_params_digest: str, seeds: list[int], tuning: list[int]) -> dict[tuple, dict]:
    """Returns every row an earlier run published at ``path`` for the same meta-params, seeds and tuning seeds, cut
    short or not, keyed by ``(rung label, task label, steps)``; empty when there is none."""
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    if (earlier.get("meta_params_digest"), earlier.get("seeds"), earlier.get("tuning_seeds")) != (
            meta_params_digest, seeds, tuning):
        return {}
    return {(r["rung"], r["task"], r["steps"]): r for r in earlier["rows"]}


def finished_rungs(path: Path, meta_params_digest: str, seeds: list[int], tuning: list[int]) -> dict[tuple, dict]:
    """Returns the rows of :func:`published_rows` that are finished: a row cut short before every baseline was
    tuned is run again (its learned run and finished baselines are read back, from the row and the cache)."""
    return {key: r for key, r in published_rows(path, meta_params_digest, seeds, tuning).items()
            if "refused" in r["learned"] or set(r["baselines"]) >= set(BASELINES)}


def refusal(rung: Rung, learned) -> str | None:
    """Returns the learned optimizer's message refusing the rung's model, or None when it serves it."""
    try:
        learned.check_params(jax.eval_shape(rung.task.init, jax.random.key(0)))
    except ValueError as err:
        return str(err)
    return None


def learned_row(rung: Rung, seeds: list[int], learned, meta_params) -> dict:
    """Returns the learned optimizer's row on ``rung`` (which it serves)."""
    make = compare.learned_maker(learned, rung.steps)
    train, valid = evaluate.train_valid_losses(rung.task, make, meta_params, rung.steps, seeds, points=POINTS)
    opt = make(meta_params)
    times = timing.optimizer_step_times(rung.task, {"adam": optax.adam(1e-3), "learned": opt}, repeats=10)
    return {**_stats(valid, train), "step_time_over_adam": times["learned"]["median"] / times["adam"]["median"]}


def step_costs(learned, meta_params, repeats: int = 20) -> list[dict]:
    """Returns the learned optimizer's training-step time over Adam's and over Muon's (the baseline's setup) at 128
    and 2,048 tokens a batch (d_model 64, two layers, sequence 64), the three timed interleaved in one run."""
    return lopt_step_cost.step_costs(learned, meta_params, lopt_step_cost.SIZES, repeats)


def epochs(rung: Rung) -> float | None:
    """Returns how many times a run of ``rung`` reads its training split: tokens read over the split's size; None for
    a task that does not read the standard library's text (no ``seq`` in its config)."""
    config = dict(rung.task.config)
    if "seq" not in config:
        return None
    split = text._corpus(config.get("text_bytes", text.TEXT_BYTES)).train
    return rung.steps * config["batch"] * (config["seq"] + 1) / len(split)


def summarise(rung: Rung, base: dict, mine: dict) -> dict:
    """Returns the rung's summary row: ratios of the learned optimizer's final validation loss to each baseline."""
    row = {"rung": rung.label, "axis": rung.axis, "value": rung.value, "task": rung.task.label, "steps": rung.steps,
           "epochs": epochs(rung), "baselines": base, "learned": mine}
    if "refused" in mine:
        return row
    for name, b in base.items():
        row[f"ratio_to_{name}"] = mine["valid_final"] / b["valid_final"]
    if "adamw+cosine" in base:
        reached = compare.steps_to_reach(np.asarray(mine["valid_curve"]), base["adamw+cosine"]["valid_final"],
                                         rung.steps)
        row["speedup_to_adamw"] = rung.steps / reached if reached else None
    return row


def table(rows: list[dict]) -> str:
    headers = ["rung", "steps", "epochs", "learned", "AdamW+cos", "Adam", "Muon", "/ AdamW", "/ Adam", "/ Muon",
               "speed-up vs AdamW", "diverged", "step time / Adam", "tuned lr (AdamW, Adam, Muon)"]
    body = []
    for r in rows:
        b, m = r["baselines"], r["learned"]
        if "refused" in m:
            body.append([r["rung"], r["steps"], "-", "refused: " + m["refused"].split(" Its ")[0], *["-"] * 10])
            continue
        # A baseline a run cut short never reached reads "-".
        lrs = ", ".join(f"{b[n]['hyper'][0]:.2g}" + ("" if b[n]["edge_free"] else "*") if n in b else "-"
                        for n in BASELINES)
        if "adamw+cosine" not in b:
            speed = "-"
        else:
            speed = f"{r['speedup_to_adamw']:.2f}x" if r["speedup_to_adamw"] else "not reached"
        # Rows published before epochs were reported, and tasks that read no text, read "-" there.
        read = f"{r['epochs']:.2g}" if r.get("epochs") is not None else "-"
        body.append([r["rung"], r["steps"], read, f"{m['valid_final']:.4f} ± {m['valid_se']:.4f}",
                     *(f"{b[n]['valid_final']:.4f}" if n in b else "-" for n in BASELINES),
                     *(f"{r[f'ratio_to_{n}']:.3f}" if n in b else "-" for n in BASELINES), speed,
                     f"{m['diverged']}/{m['seeds']}", f"{m['step_time_over_adam']:.2f}", lrs])
    return report.markdown_table(headers, body)


def figure(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, axis in zip(axes[:2], ("width", "horizon")):
        picked = [r for r in rows if r["axis"] == axis and "refused" not in r["learned"]]
        if not picked:
            continue
        for name in BASELINES:
            have = [r for r in picked if f"ratio_to_{name}" in r]
            ax.plot([r["value"] for r in have], [r[f"ratio_to_{name}"] for r in have], "o-",
                    label=f"learned / tuned {name}")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("d_model" if axis == "width" else "training steps")
        ax.set_ylabel("final validation loss ratio")
        ax.set_title(f"ratio against {axis}")
        ax.legend(fontsize=8)
    widths = [r for r in rows if r["axis"] == "width" and "refused" not in r["learned"]]
    if not widths:
        return fig
    widest = max(widths, key=lambda r: r["value"])
    for name, entry in [*widest["baselines"].items(), ("learned (shipped)", widest["learned"])]:
        if "valid_curve" in entry:
            curve = entry["valid_curve"]
            axes[2].plot(np.arange(1, len(curve) + 1) * widest["steps"] / len(curve), curve, label=name)
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("validation loss")
    axes[2].set_title(f"validation curves, {widest['rung']}")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def ship_baselines(cache: dict, cache_path: Path) -> Path:
    """Writes the tuned AdamW and Adam settings of the recipe's held-out tasks (those the ladder tuned) beside the
    shipped optimizer, where ``unf-main`` and ``unf-eval`` read them instead of tuning again; returns the path."""
    tuned = {}
    for h in recipes.recipe("transformer-lm").heldout():
        found = [rows for key, rows in cache.items() if key.startswith(h.key + " ")]
        if found:
            tuned[h.key] = {name: found[0][name]["hyper"] for name in ("adamw+cosine", "adam")}
    path = shipped.WEIGHTS / "transformer-lm" / "baselines.json"
    path.write_text(json.dumps({"source": f"tuned on held-out loss by benchmarks.lopt_ladder ({cache_path.name})",
                                "tuned": tuned}, indent=1) + "\n")
    print(f"tuned settings of {len(tuned)} held-out tasks written to {path}")
    return path


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "the full ladder: sequence 128, batch 16, 2,000-5,000 steps")
    parser.add_argument("--seeds", type=int, default=2, help="evaluation seeds per rung")
    parser.add_argument("--tuning-seeds", type=int, default=1, help="seeds for tuning the baselines (never evaluated)")
    parser.add_argument("--only", nargs="+", default=None, help="rungs to run, by label (e.g. width=64), in the order given")
    parser.add_argument("--steps", type=int, default=None,
                        help="run length of the width, depth and variant rungs (default 500, 2,000 with --large)")
    parser.add_argument("--horizons", type=int, nargs="+", default=None,
                        help="run lengths of the horizon rungs (default 1,000 and 2,000; 5,000 with --large)")
    parser.add_argument("--horizon-width", type=int, default=None,
                        help="d_model of the horizon rungs (default 32; 64 with --large)")
    parser.add_argument("--widths", type=int, nargs="+", default=None,
                        help="d_model of the width rungs (default 32 64 128 256); each must divide by the heads")
    parser.add_argument("--layers", type=int, default=2, help="layers of the width rungs' models (default 2)")
    parser.add_argument("--heads", type=int, default=4, help="heads of the width rungs' models (default 4)")
    parser.add_argument("--text-bytes", type=int, default=text.TEXT_BYTES,
                        help="standard-library source both splits take, nine tenths for training (default "
                        f"{text.TEXT_BYTES:,}); a rung that reads its training split many times over needs more")
    parser.add_argument("--learning-rates", type=float, nargs="+", default=list(LEARNING_RATES),
                        help="the grid each baseline's tuning starts from, extended past an edge until its best value "
                        f"is interior (default {' '.join(map(str, LEARNING_RATES))})")
    parser.add_argument("--baselines-only", action="store_true", help="tune and cache the baselines, then stop")
    parser.add_argument("--retune", action="store_true", help="ignore the cached tuned baselines")
    parser.add_argument("--rerun", action="store_true",
                        help="run every rung chosen, even those the results in --out hold for these meta-params")
    parser.add_argument("--ship-baselines", action="store_true",
                        help="write the tuned settings of the recipe's held-out tasks, and the ladder's table and "
                        "figure (unf-main shows them), beside the shipped optimizer")
    parser.add_argument("--meta-params", type=Path, default=None, metavar="EXPORT",
                        help="evaluate the meta-params in this export folder (unf-meta-train --recipe writes "
                        "RUN/export) instead of the shipped optimizer")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.tuning_seeds < 1:
        parser.error("--seeds and --tuning-seeds must be positive")
    sizes = [("--steps", args.steps), ("--horizon-width", args.horizon_width)]
    sizes += [("--horizons", h) for h in args.horizons or ()]
    sizes += [("--widths", w) for w in args.widths or ()]
    sizes += [("--layers", args.layers), ("--heads", args.heads), ("--text-bytes", args.text_bytes)]
    for flag, value in sizes:
        if value is not None and value < 1:
            parser.error(f"{flag} must be positive, got {value}")
    lengths = [("--steps", args.steps)] + [("--horizons", h) for h in args.horizons or ()]
    for flag, value in lengths:
        if value is not None and value % POINTS:
            parser.error(f"{flag} must be a multiple of {POINTS} (the validation loss is read {POINTS} times a run), "
                         f"got {value}")
    if any(w % args.heads for w in args.widths or ()):
        parser.error(f"--widths must be multiples of the {args.heads} heads, got {args.widths}")
    if not all(np.isfinite(lr) and lr > 0 for lr in args.learning_rates):
        parser.error(f"--learning-rates must be finite and positive, got {args.learning_rates}")
    ladder = rungs(args.large, args.steps, tuple(args.horizons or ()), args.horizon_width, tuple(args.widths or ()),
                   args.layers, args.heads, args.text_bytes)
    out = Path(args.out) if args.out else report.RESULTS
    name = "lopt_ladder_large" if args.large else "lopt_ladder"
    cache_path = out / f"{name}_baselines.json"
    cache = {} if args.retune or not cache_path.exists() else json.loads(cache_path.read_text())
    seeds, tuning = list(range(args.seeds)), list(range(100, 100 + args.tuning_seeds))
    by_label = {r.label: r for r in ladder}
    if args.only and not set(args.only) <= set(by_label):
        parser.error(f"--only names rungs {args.only}; the ladder has {list(by_label)}")
    chosen = ladder if args.only is None else [by_label[label] for label in args.only]  # in the order given
    try:
        learned, meta_params, made = load_learned(args.meta_params)
    except (FileNotFoundError, ValueError) as err:
        parser.error(f"--meta-params: {err}")
    command = f"python -m benchmarks.lopt_ladder {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()
    digest = fingerprint(meta_params)
    earlier = out / f"{name}.json"
    published = {} if args.rerun else published_rows(earlier, digest, seeds, tuning)
    finished = {} if args.rerun else finished_rungs(earlier, digest, seeds, tuning)
    rows = []
    for rung in chosen:
        print(f"[{rung.label}] {rung.task.label}, {rung.steps} steps", flush=True)
        row = finished.get((rung.label, rung.task.label, rung.steps))
        if row is not None:
            print(f"  read back from {earlier} (--rerun runs it again)", flush=True)
            rows.append(row)
            continue
        passes = epochs(rung)
        if passes is not None and passes > 1:
            one_pass = int(np.ceil(args.text_bytes * passes / 1e6)) * 1_000_000
            print(f"  reads its training split {passes:.2g} times over, so overfitting weighs in the final "
                  f"loss; --text-bytes {one_pass} gives one pass", flush=True)
        refused = refusal(rung, learned)
        if refused is not None:
            print(f"  the learned optimizer refuses it: {refused}", flush=True)
            rows.append(summarise(rung, {}, {"refused": refused}))
            continue
        out.mkdir(parents=True, exist_ok=True)
        mine = None
        if not args.baselines_only:
            # The learned optimizer runs first and the table is published after every baseline, so a run cut short
            # (a lease on an accelerator ending) keeps the comparisons it finished.
            cut_short = published.get((rung.label, rung.task.label, rung.steps))
            if cut_short is not None:
                print(f"  [{rung.label}] the learned optimizer's runs read back from {earlier}", flush=True)
                mine = cut_short["learned"]
            else:
                print(f"  [{rung.label}] the learned optimizer on seeds {seeds}", flush=True)
                mine = learned_row(rung, seeds, learned, meta_params)

        def save(base, rung=rung, mine=mine):
            cache_path.write_text(json.dumps(cache, indent=1, default=float) + "\n")
            if mine is not None:
                publish(name, command, made, digest, seeds, tuning, [*rows, summarise(rung, dict(base), mine)], None,
                        out)

        base = tuned_baselines(rung, seeds, tuning, cache, tuple(args.learning_rates), save)
        save(base)
        if mine is not None:
            rows.append(summarise(rung, base, mine))
    if args.ship_baselines:
        ship_baselines(cache, cache_path)
    if args.baselines_only:
        print(f"tuned baselines cached in {cache_path}")
        return 0
    paths = publish(name, command, made, digest, seeds, tuning, rows, step_costs(learned, meta_params), out)
    if args.ship_baselines:
        for kind, path in (("md", paths["md"]), ("png", paths["png"])):
            shutil.copyfile(path, shipped.WEIGHTS / "transformer-lm" / f"ladder.{kind}")
        print(f"the ladder's table and figure shipped beside the optimizer ({shipped.WEIGHTS / 'transformer-lm'})")
    return 0


def publish(name: str, command: str, made: dict, digest: str, seeds: list, tuning: list, rows: list, costs: list | None,
            out: Path) -> dict[str, Path]:
    """Writes the ladder's JSON, table and figure for the rungs in ``rows``; ``costs`` None: the step costs are
    measured when the run ends."""
    payload = {"device": timing.device_description(), "command": command, "shipped": made,
               "meta_params_digest": digest, "seeds": seeds, "tuning_seeds": tuning, "rows": rows, "step_cost": costs}
    if costs is None:
        cost_table = "(measured when the run ends)\n"
    else:
        cost_table = report.markdown_table(
            ["tokens a batch", "Adam step (s)", "Muon step (s)", "learned step (s)", "learned / Adam",
             "learned / Muon"],
            [[c["tokens"], c["adam_seconds"], c["muon_seconds"], c["learned_seconds"], c["over_adam"],
              c["over_muon"]] for c in costs])
    return report.publish(name, payload, table(rows) + "\nStep time, d_model 64, two layers:\n\n" + cost_table,
                          figure(rows), out)

if __name__ == "__main__":
    sys.exit(main())
