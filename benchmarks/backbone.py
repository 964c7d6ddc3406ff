"""Backbone throughput on the current device: params, MAdds, forward and train-step images/s.

Run: python benchmarks/backbone.py [--batch 64] [--iters 3] [--backbones seesaw_shuffle,mobilefacenet]
Prints one table; 'vs MFN' is each model's images/s divided by MobileFaceNet's, measured in the same run.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import optax

from common import use_fvjax_process_settings
from fvjax import models


def images_per_second(fn, args, batch: int, iters: int) -> float:
  jax.block_until_ready(fn(*args))  # compile + warm up
  start = time.perf_counter()
  for _ in range(iters):
    jax.block_until_ready(fn(*args))
  return batch * iters / (time.perf_counter() - start)


def measure(name: str, batch: int, iters: int) -> dict:
  module = models.backbone(name)
  variables = jax.jit(lambda k: models.init_backbone(module, k))(jax.random.key(0))
  images = jax.random.uniform(jax.random.key(1), (batch, *models.INPUT_SHAPE), minval=-1, maxval=1)
  forward = jax.jit(lambda v, x: module.apply(v, x, train=False))
  tx = optax.sgd(0.1, momentum=0.9)

  @jax.jit
  def train_step(params, batch_stats, opt_state, x):
    def loss(p):
      emb, new = module.apply({'params': p, 'batch_stats': batch_stats}, x, train=True, mutable=['batch_stats'])
      return jnp.mean(emb**2), new
    grads, new = jax.grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new['batch_stats'], opt_state

  state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))
  return {
      'name': name,
      'params': models.count_params(variables),
      'madds': models.count_madds(module, variables, models.INPUT_SHAPE),
      'forward': images_per_second(forward, (variables, images), batch, iters),
      'train': images_per_second(train_step, (*state, images), batch, iters),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--iters', type=int, default=3)
  parser.add_argument('--backbones', default=','.join(models.BACKBONES))
  args = parser.parse_args()
  settings = use_fvjax_process_settings()
  names = args.backbones.split(',')
  if 'mobilefacenet' not in names:
    names.append('mobilefacenet')  # the baseline of the ratios
  rows = [measure(n, args.batch, args.iters) for n in names]
  base = next(r for r in rows if r['name'] == 'mobilefacenet')
  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}), {settings}, batch {args.batch}')
  print(f"{'backbone':<16}{'params':>11}{'MAdds':>9}{'fwd img/s':>11}{'vs MFN':>8}{'train img/s':>13}{'vs MFN':>8}")
  for r in rows:
    print(f"{r['name']:<16}{r['params']:>11,}{r['madds'] / 1e6:>8.0f}M{r['forward']:>11.1f}"
          f"{r['forward'] / base['forward']:>8.2f}{r['train']:>13.1f}{r['train'] / base['train']:>8.2f}")


if __name__ == '__main__':
  main()
