"""Test-session settings: four virtual CPU devices for sharding tests, strict rank promotion, and XLA's quickest
backend optimisation level: the tests run tiny models whose time is almost all compilation, which this halves."""

import os

# XLA reads its flags when the CPU backend starts, so they are set before jax is imported.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0"]))

import jax  # noqa: E402

# Must run before any computation initialises the CPU backend.
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_rank_promotion", "raise")
