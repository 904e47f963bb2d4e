"""Test-session settings: four virtual CPU devices for sharding tests, strict rank promotion."""

import jax

# Must run before any computation initialises the CPU backend.
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_rank_promotion", "raise")
