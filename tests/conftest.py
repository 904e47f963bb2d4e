"""Test-session settings: four virtual CPU devices for sharding tests, strict rank promotion, XLA's quickest
backend optimisation level without its CPU fusion emitters (whose code generation was three quarters of the default
suite's time), and one compilation cache for the session: the tests run tiny models whose time is almost
all compilation, and the docs pages, examples and test files that build the same program (the README's
meta-training step and the guide's, a task's optimizer in two test files) compile it once."""

import atexit
import os
import shutil
import tempfile

# XLA reads its flags when the CPU backend starts, so they are set before jax is imported.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0",
                                                          "--xla_llvm_disable_expensive_passes=true",
                                                          "--xla_cpu_use_fusion_emitters=false"]))
# Set in the controlling process before pytest-xdist starts its workers, so the workers and every subprocess a test
# starts (a docs page, an example, a CLI) share it; a fresh directory per session, so a run never reads an older
# run's programs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="hetnet-unf-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

# Must run before any computation initialises the CPU backend.
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_rank_promotion", "raise")
