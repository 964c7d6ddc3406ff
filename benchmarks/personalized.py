"""Batched personalised verification throughput: users x probes scored per second.

Run: python benchmarks/personalized.py [--users 100,1000,10000] [--probes 1000] [--users-per-step 1,32]
                                      [--memory-budget-mb 2048] [--max-seconds 300]
For each U (and each number of users vmapped together per step), the U x P score matrix of generated
verifiers (fvjax.eval.personalized.score_matrix, tiled by a memory budget), beside, measured in the same
run on the same device:
  (a) a Python loop over users (one jitted f call per user on all P probes), on min(U, 20) users;
  (b) the embedding baseline: the seesaw_shuffle backbone embeds the P probes, then U x P cosines.
Sizes whose projected time exceeds --max-seconds are skipped and say so. Peak memory: the
process's max RSS on CPU, the device's peak bytes in use on an accelerator.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from common import peak_memory_mb, timed
from fvjax import models
from fvjax.eval import personalized
from fvjax.models import verifier


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--users', default='100,1000,10000')
  parser.add_argument('--probes', type=int, default=1000)
  parser.add_argument('--users-per-step', default='1', help='comma list: users vmapped together per step')
  parser.add_argument('--max-seconds', type=float, default=300)
  parser.add_argument('--memory-budget-mb', type=int, default=2048)
  args = parser.parse_args()
  spec = verifier.VerifierSpec()
  rng = np.random.default_rng(0)
  probes = rng.uniform(-1, 1, (args.probes, spec.input_size, spec.input_size, 3)).astype(np.float32)
  budget = args.memory_budget_mb << 20

  # (a) Python loop over users: pairs/s from 20 users.
  single = jax.jit(lambda t, x: verifier.apply(t, x, spec))
  loop_thetas = np.stack([np.asarray(verifier.init_theta(jax.random.key(i), spec)) for i in range(20)])
  single(loop_thetas[0], probes).block_until_ready()
  loop_time = sum(timed(single, t, probes)[0] for t in loop_thetas)
  loop_rate = len(loop_thetas) * args.probes / loop_time

  # (b) embedding baseline: backbone on the probes (112x112 faces) + cosine with U enrolment embeddings.
  backbone = models.backbone('seesaw_shuffle')
  variables = jax.jit(lambda k: models.init_backbone(backbone, k))(jax.random.key(0))
  embed = jax.jit(lambda x: models.l2_normalize(backbone.apply(variables, x)))
  faces = jnp.asarray(rng.uniform(-1, 1, (64, *models.INPUT_SHAPE)).astype(np.float32))
  embed(faces).block_until_ready()
  embed_per_probe = timed(embed, faces)[0] / len(faces)
  cosine = jax.jit(lambda a, b: a @ b.T)

  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}); '
        f'P = {args.probes} probes; verifier {spec.num_params:,} params; memory budget {args.memory_budget_mb} MB')
  print(f"{'users':>7}{'per step':>9}{'tile':>12}{'seconds':>10}{'pairs/s':>12}{'vs loop':>9}{'embed pairs/s':>15}"
        f"{'vs embed':>10}{'peak MB':>10}")
  for users in (int(u) for u in args.users.split(',')):
    projected = users * args.probes / loop_rate
    if projected > args.max_seconds:
      print(f'{users:>7}  skipped: projected {projected:.0f} s on this device (> --max-seconds {args.max_seconds:.0f})')
      continue
    thetas = np.tile(loop_thetas, (users // len(loop_thetas) + 1, 1))[:users]
    enrolled = jnp.asarray(rng.normal(size=(users, 512)).astype(np.float32))
    probe_emb = jnp.asarray(rng.normal(size=(args.probes, 512)).astype(np.float32))
    cosine(enrolled, probe_emb).block_until_ready()
    embed_rate = users * args.probes / (embed_per_probe * args.probes + timed(cosine, enrolled, probe_emb)[0])
    for per_step in (int(n) for n in args.users_per_step.split(',')):
      score = lambda u, p: personalized.score_matrix(thetas[:u], probes[:p], spec, budget, users_per_step=per_step)
      tile = personalized.tile_shape(users, args.probes, spec, budget, jax.device_count(), per_step)
      score(*tile)  # compile the tile shape
      seconds, _ = timed(score, users, args.probes)
      rate = users * args.probes / seconds
      print(f'{users:>7}{per_step:>9}{f"{tile[0]}x{tile[1]}":>12}{seconds:>10.2f}{rate:>12,.0f}{rate / loop_rate:>9.2f}'
            f'{embed_rate:>15,.0f}{rate / embed_rate:>10.3f}{peak_memory_mb():>10.0f}')
  print(f'python loop over users: {loop_rate:,.0f} pairs/s; backbone embedding: {1 / embed_per_probe:.1f} probes/s')


if __name__ == '__main__':
  main()
