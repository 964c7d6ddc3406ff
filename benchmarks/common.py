"""Helpers shared by the benchmark scripts (run them as `python benchmarks/NAME.py`, which puts this folder on the
import path)."""

import os
import resource
import time

import jax
import jax.numpy as jnp

from fvjax import runtime


def use_fvjax_process_settings() -> str:
  """Restarts the process as the `fvjax` command does (glibc huge pages where they help) and names the setting."""
  runtime.use_huge_pages()
  on = runtime.HUGE_PAGES_TUNABLE in os.environ.get('GLIBC_TUNABLES', '').split(':')
  return f"malloc huge pages {'on' if on else 'off'}"


def timed(fn, *args):
  """(seconds, result) of fn(*args), waiting for the device to finish."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return time.perf_counter() - start, out


def peak_memory_mb() -> float:
  """The device's peak bytes in use on an accelerator; the process's max RSS on CPU."""
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_macs_per_s(n: int = 2048, repeats: int = 5) -> float:
  """Multiply-adds per second of an n x n x n float32 matmul on the default device (the run's own ceiling)."""
  a = jnp.ones((n, n), jnp.float32)
  square = jax.jit(lambda a: a @ a)
  square(a).block_until_ready()
  return n**3 * repeats / sum(timed(square, a)[0] for _ in range(repeats))
