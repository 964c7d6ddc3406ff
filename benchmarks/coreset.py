"""FaceCoresetNet aggregation time per set versus set size T: the growth must be linear.

Run: python benchmarks/coreset.py [--sizes 10,100,1000,10000] [--sets 16] [--repeats 5]
For each T, a batch of `--sets` random sets of T 512-d features goes through the
jitted inference aggregator (K=3, 8 heads) and through mean pooling in the same
run on the same device; the table gives the median time per set and the ratio.
The growth exponent is the least-squares slope of log(time) on log(T) over the
sizes >= 100 (below that, fixed per-call costs dominate); about 1 means linear.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.models.coreset import CoresetAggregator, mean_pool


def median_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--sizes', default='10,100,1000,10000')
  parser.add_argument('--sets', type=int, default=16)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--coreset-size', type=int, default=3)
  args = parser.parse_args()
  sizes = [int(s) for s in args.sizes.split(',')]

  model = CoresetAggregator(coreset_size=args.coreset_size)
  params = model.init({'params': jax.random.key(0)}, jnp.ones((1, 4, 512)))['params']
  aggregate = jax.jit(lambda x, m: model.apply({'params': params}, x, m).descriptor)
  pool = jax.jit(mean_pool)
  print(f'device: {jax.devices()[0].device_kind}; {args.sets} sets per call, K={args.coreset_size}, 512-d features')
  print(f"{'T':>7}{'coreset ms/set':>16}{'mean pool ms/set':>18}{'ratio':>8}")
  coreset_times = []
  for t in sizes:
    x = jax.random.normal(jax.random.key(t), (args.sets, t, 512)) * 20
    mask = jnp.ones((args.sets, t), bool)
    tc = median_seconds(aggregate, x, mask, repeats=args.repeats) / args.sets
    tp = median_seconds(pool, x, mask, repeats=args.repeats) / args.sets
    coreset_times.append(tc)
    print(f'{t:>7}{1e3 * tc:>16.3f}{1e3 * tp:>18.4f}{tc / tp:>7.1f}x')
  fit = [(t, s) for t, s in zip(sizes, coreset_times) if t >= 100]
  if len(fit) >= 2:
    slope = np.polyfit(np.log([t for t, _ in fit]), np.log([s for _, s in fit]), 1)[0]
    print(f'growth exponent of coreset time in T (T >= 100): {slope:.2f}  (1 = linear, 2 = quadratic)')


if __name__ == '__main__':
  main()
