"""Hypernetwork training throughput: generated-verifier x probe pairs per second of a whole train step.

Run: python benchmarks/hyper_step.py [--users 16,64,256] [--probes-per-user 2] [--steps 10]
One jitted step (generator forward, every generated f on every probe of the batch, the pair objective, backward,
AdamW update) on synthetic inputs, for the paper's generator (every weight of f generated: f runs once per user and
probe) and the shared-base generator with a personal logit layer (f's convolutions run once per probe; the users
differ only in the last layer), at U users and U x m probes a step (U x U x m scored pairs). The ratio column is
against the paper's generator at the same batch, measured in the same run; rows whose projected time exceeds
--max-seconds are skipped and say so.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from common import peak_memory_mb, timed
from fvjax.models import hypernet, verifier
from fvjax.train import objectives

EMBEDDING = 128


def make_step(shared_base: bool, spec: verifier.VerifierSpec):
  generator = hypernet.WeightGenerator(spec, shared_base=shared_base)
  task = objectives.hyper_task(generator, spec, EMBEDDING, batches=None, distill_weight=1.0)
  params = task.init(jax.random.key(0))['params']
  tx = optax.adamw(1e-3)

  @jax.jit
  def step(params, opt_state, batch):
    (loss, _), grads = jax.value_and_grad(task.loss, has_aux=True)(params, {}, batch, None)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step, params, tx.init(params)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--users', default='16,64,256')
  parser.add_argument('--probes-per-user', type=int, default=2)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--max-seconds', type=float, default=120)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}); '
        f'{args.probes_per_user} probes per user; {args.steps} timed steps after one to compile')
  print(f"{'generator':<28}{'users':>7}{'probes':>8}{'pairs':>9}{'ms/step':>10}{'pairs/s':>13}{'vs paper':>10}"
        f"{'peak MB':>9}")
  for users in (int(u) for u in args.users.split(',')):
    probes = users * args.probes_per_user
    paper_rate = None
    for name, shared, normalized in (('paper (all of f generated)', False, False),
                                     ('shared base, personal logit', True, True)):
      spec = verifier.VerifierSpec(normalize_features=normalized)
      batch = {'enrol': jnp.asarray(rng.normal(size=(users, EMBEDDING)), jnp.float32),
               'probes': jnp.asarray(rng.uniform(-1, 1, (probes, 64, 64, 3)), jnp.float32),
               'probe_embed': jnp.asarray(rng.normal(size=(probes, EMBEDDING)), jnp.float32),
               'probe_user': jnp.repeat(jnp.arange(users), args.probes_per_user),
               'norm_weight': jnp.zeros(users)}
      step, params, opt_state = make_step(shared, spec)
      first, (params, opt_state, _) = timed(step, params, opt_state, batch)  # compiles; bounds a step's time
      if first * args.steps > args.max_seconds:
        print(f'{name:<28}{users:>7}{probes:>8}  skipped: projected over --max-seconds {args.max_seconds:.0f}')
        continue
      seconds = 0.0
      for _ in range(args.steps):
        elapsed, (params, opt_state, _) = timed(step, params, opt_state, batch)
        seconds += elapsed
      rate = users * probes * args.steps / seconds
      if not shared:
        paper_rate = rate
      ratio = f'{rate / paper_rate:>10.1f}' if paper_rate else f"{'—':>10}"
      print(f'{name:<28}{users:>7}{probes:>8}{users * probes:>9,}{1e3 * seconds / args.steps:>10.1f}{rate:>13,.0f}'
            f'{ratio}{peak_memory_mb():>9.0f}', flush=True)


if __name__ == '__main__':
  main()
