"""Adam vs SGD on shallow linear transformers for in-context linear regression (Ahn et al., ICLR 2024).

For each setting (covariate distribution, number of layers): SGD with momentum 0.9 and Adam (betas 0.9, 0.9), both
with global-norm clipping at 1, each over a small learning-rate sweep and several seeds, batches of 1,000 fresh
sequences per step. One compiled runner per (setting, optimizer) takes the learning rate and seed as traced inputs
and runs them all at once (vmap); parameters are kept at a few snapshots, and the probes run on those afterwards:

- stochastic-gradient noise at initialisation: ``||g_B - g_{100B}||`` over many batches, against the norms of Gaussian
  noise with the same covariance;
- robust condition number ``max|diag H| / median|diag H|`` of the full Hessian (the model is small) along each
  trajectory of the best learning rate;
- directional smoothness ``||g(x_{t+1}) - g(x_t)|| / ||x_{t+1} - x_t||`` along the optimizer's own step, against
  ``||g(x_t)||``.

    python -m benchmarks.linear_attention_optim            # CPU, about 20 minutes on 2 cores
    python -m benchmarks.linear_attention_optim --large    # more steps and seeds
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from tqdm import tqdm

from benchmarks import report, timing
from hetnet import icl

SETTINGS = [("sphere", 3), ("gaussian", 3), ("heavy", 3), ("gaussian", 1), ("gaussian", 6), ("heavy", 6)]
LEARNING_RATES = (0.001, 0.005, 0.02, 0.05)
BATCH = 1000
OPTIMIZERS = {
    "SGD(momentum 0.9)": lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr, momentum=0.9)),
    "Adam(0.9, 0.9)": lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr, b1=0.9, b2=0.9)),
}


def make_runner(cfg: icl.ICLConfig, covariates: str, make_opt, steps: int, snapshots: int):
    """Returns a jitted ``run(lrs, seeds) -> (losses [runs, steps], before [runs, snaps, ...], after [...])``."""
    chunk = steps // snapshots

    def run(lr, seed):
        key = jax.random.key(seed)
        params, _ = icl.init(jax.random.fold_in(key, 0), cfg)
        opt = make_opt(lr)
        state = opt.init(params)

        def step(carry, i):
            params, state, _ = carry
            batch = icl.sample_batch(jax.random.fold_in(key, i + 1), cfg, BATCH, covariates)
            loss, grads = jax.value_and_grad(icl.loss)(params, batch, cfg)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state, params), loss

        def block(carry, j):
            carry, losses = jax.lax.scan(step, carry, j * chunk + jnp.arange(chunk))
            params, _, previous = carry
            return carry, (losses, previous, params)

        _, (losses, before, after) = jax.lax.scan(block, (params, state, params), jnp.arange(snapshots))
        return losses.reshape(-1), before, after

    return jax.jit(jax.vmap(run))


def gradient_noise(cfg: icl.ICLConfig, covariates: str, samples: int, seed: int = 0) -> dict:
    """Returns noise norms ``||g_B - g_{100B}||`` at initialisation and Gaussian norms of the same covariance."""
    params, _ = icl.init(jax.random.key(seed), cfg)
    flat = ravel_pytree(params)[0]
    grad = jax.jit(jax.vmap(lambda k: ravel_pytree(jax.grad(icl.loss)(
        params, icl.sample_batch(k, cfg, BATCH, covariates), cfg))[0]))
    full = jnp.mean(grad(jax.random.split(jax.random.key(10_000 + seed), 100)), axis=0)
    noise = grad(jax.random.split(jax.random.key(20_000 + seed), samples)) - full
    noise = np.asarray(noise, np.float64)
    cov = np.cov(noise, rowvar=False)
    gaussian = np.random.default_rng(seed).multivariate_normal(np.zeros(flat.size), cov, size=samples,
                                                               method="eigh")
    norms, ref = np.linalg.norm(noise, axis=1), np.linalg.norm(gaussian, axis=1)
    tail = lambda x: float(np.quantile(x, 0.99) / np.median(x))  # noqa: E731
    return {"norms": norms.tolist(), "gaussian_norms": ref.tolist(), "p99_over_median": tail(norms),
            "gaussian_p99_over_median": tail(ref), "max_over_median": float(norms.max() / np.median(norms)),
            "gaussian_max_over_median": float(ref.max() / np.median(ref))}


def probes(cfg: icl.ICLConfig, covariates: str, before, after) -> dict:
    """Returns the robust condition number, directional smoothness and gradient norm at each snapshot.

    before, after: params pytrees with leading [seeds, snapshots] axes: the step into each snapshot.
    """
    batch = icl.sample_batch(jax.random.key(99), cfg, BATCH // 2, covariates)
    example = jax.tree.map(lambda a: a[0, 0], before)
    _, unravel = ravel_pytree(example)
    loss_flat = lambda v: icl.loss(unravel(v), batch, cfg)  # noqa: E731

    def one(p_before, p_after):
        x0, x1 = ravel_pytree(p_before)[0], ravel_pytree(p_after)[0]
        diag = jnp.abs(jnp.diag(jax.hessian(loss_flat)(x1)))
        g0, g1 = jax.grad(loss_flat)(x0), jax.grad(loss_flat)(x1)
        return {"condition": jnp.max(diag) / jnp.median(diag),
                "smoothness": jnp.linalg.norm(g1 - g0) / jnp.maximum(jnp.linalg.norm(x1 - x0), 1e-12),
                "grad_norm": jnp.linalg.norm(g0)}

    lead = jax.tree.leaves(before)[0].shape[:2]
    flat = lambda t: jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), t)  # noqa: E731
    # One snapshot at a time: the Hessian's intermediates over the probe batch are large.
    out = jax.jit(lambda b, a: jax.lax.map(lambda pair: one(*pair), (b, a)))(flat(before), flat(after))
    return {k: np.asarray(v).reshape(lead).tolist() for k, v in out.items()}


def study(covariates: str, layers: int, steps: int, seeds: int, snapshots: int) -> dict:
    cfg = icl.ICLConfig(layers=layers)
    result = {"covariates": covariates, "layers": layers, "optimizers": {}}
    lrs = jnp.repeat(jnp.asarray(LEARNING_RATES), seeds)
    seed_ids = jnp.tile(jnp.arange(seeds), len(LEARNING_RATES))
    for name, make_opt in OPTIMIZERS.items():
        losses, before, after = make_runner(cfg, covariates, make_opt, steps, snapshots)(lrs, seed_ids)
        losses = np.asarray(losses).reshape(len(LEARNING_RATES), seeds, steps)
        tail = np.where(np.isfinite(losses[..., -steps // 10:]), losses[..., -steps // 10:], np.inf)
        final = np.mean(tail, axis=(1, 2))
        best = int(np.argmin(final))
        pick = lambda t: jax.tree.map(lambda a: a.reshape(len(LEARNING_RATES), seeds, *a.shape[1:])[best], t)  # noqa: E731
        result["optimizers"][name] = {
            "final_loss_by_lr": dict(zip(map(str, LEARNING_RATES), final.tolist())),
            "best_lr": LEARNING_RATES[best],
            "final_loss": float(final[best]),
            "diverged_everywhere": bool(not np.isfinite(final[best])),
            "median_curve": np.median(losses[best], axis=0).tolist(),
            "probes": probes(cfg, covariates, pick(before), pick(after)),
        }
    return result


def summarize(results: list[dict], noise: dict) -> tuple[list[list], dict]:
    sgd, adam = OPTIMIZERS
    rows, findings = [], {}
    for r in results:
        s, a = r["optimizers"][sgd], r["optimizers"][adam]
        cond = {k: float(np.median(v["probes"]["condition"])) for k, v in r["optimizers"].items()}
        setting = f"{r['covariates']}, L={r['layers']}"
        loss = lambda o: "diverged at every lr" if o["diverged_everywhere"] else o["final_loss"]  # noqa: E731
        both = np.isfinite(s["final_loss"]) and np.isfinite(a["final_loss"])
        ratio = s["final_loss"] / a["final_loss"] if both else "-"
        rows.append([setting, s["best_lr"], loss(s), a["best_lr"], loss(a), ratio, cond[sgd], cond[adam]])
        findings[setting] = {"sgd_over_adam_loss": ratio, "condition_sgd": cond[sgd], "condition_adam": cond[adam]}
    for kind, n in noise.items():
        findings[f"noise {kind}"] = {k: v for k, v in n.items() if not k.endswith("norms")}
    return rows, findings


def plot(results: list[dict], noise: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for i, r in enumerate(results):
        for name, ls in zip(OPTIMIZERS, ("--", "-")):
            curve = r["optimizers"][name]["median_curve"]
            axes[0, 0].plot(curve, ls, color=f"C{i}", label=f"{r['covariates']} L={r['layers']}, {name.split('(')[0]}")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylim(top=1e2)  # Adam's spikes reach far higher; the clipped axis keeps the curves readable
    axes[0, 0].set_xlabel("step")
    axes[0, 0].set_ylabel("loss (median over seeds, best lr)")
    axes[0, 0].legend(fontsize=6, ncol=2)
    for i, (kind, n) in enumerate(noise.items()):
        med = np.median(n["gaussian_norms"])
        axes[0, 1].hist(np.asarray(n["norms"]) / med, bins=60, alpha=0.5, color=f"C{i}", label=f"{kind} covariates",
                        density=True)
        axes[0, 1].hist(np.asarray(n["gaussian_norms"]) / med, bins=60, histtype="step", color=f"C{i}",
                        label=f"Gaussian, same covariance ({kind})", density=True)
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_xlabel("||g_B - g_100B|| / median Gaussian norm (at init, L=3)")
    axes[0, 1].legend(fontsize=7)
    for i, r in enumerate(results):
        for name, ls in zip(OPTIMIZERS, ("--", "-")):
            cond = np.median(np.asarray(r["optimizers"][name]["probes"]["condition"]), axis=0)
            axes[1, 0].plot(cond, ls, color=f"C{i}")
            p = r["optimizers"][name]["probes"]
            axes[1, 1].scatter(np.ravel(p["grad_norm"]), np.ravel(p["smoothness"]), s=8, color=f"C{i}",
                               marker="o" if "Adam" in name else "x")
    axes[1, 0].set_yscale("log")
    axes[1, 0].set_xlabel("snapshot")
    axes[1, 0].set_ylabel("max|diag H| / median|diag H| (dashed SGD, solid Adam)")
    for ax in (axes[1, 1],):
        ax.set_xscale("log")
        ax.set_yscale("log")
    axes[1, 1].set_xlabel("gradient norm")
    axes[1, 1].set_ylabel("directional smoothness (x SGD, o Adam)")
    fig.suptitle("Linear transformers on in-context linear regression: SGD vs Adam")
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = report.argument_parser(__doc__, "more steps and seeds")
    args = parser.parse_args(argv)
    steps, seeds, snapshots = (5000, 5, 20) if args.large else (400, 2, 4)
    noise = {kind: gradient_noise(icl.ICLConfig(layers=3), kind, samples=500) for kind in ("gaussian", "heavy")}
    results = [study(c, layers, steps, seeds, snapshots) for c, layers in tqdm(SETTINGS, desc="settings")]
    rows, findings = summarize(results, noise)
    table = report.markdown_table(
        ["setting", "SGD lr", "SGD loss", "Adam lr", "Adam loss", "SGD / Adam loss", "SGD condition",
         "Adam condition"], rows
    )
    table += (f"\nLosses are the mean of the last 10% of {steps} steps (batches of {BATCH}), at the best learning rate "
              f"of {LEARNING_RATES} for each optimizer, over {seeds} seeds; condition is the median robust condition "
              "number max|diag H| / median|diag H| along the trajectory.\n\n")
    table += report.markdown_table(
        ["covariates (L=3, init)", "noise p99/median", "Gaussian p99/median", "noise max/median",
         "Gaussian max/median"],
        [[k, n["p99_over_median"], n["gaussian_p99_over_median"], n["max_over_median"], n["gaussian_max_over_median"]]
         for k, n in noise.items()],
    )
    command = "python -m benchmarks.linear_attention_optim" + (" --large" if args.large else "")
    payload = {"device": timing.device_description(), "command": command, "steps": steps, "seeds": seeds,
               "learning_rates": LEARNING_RATES, "results": results, "noise": noise, "findings": findings}
    report.publish("linear_attention_optim_large" if args.large else "linear_attention_optim", payload, table,
                   plot(results, noise), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
