"""1:N identification at gallery scale: personal verifiers vs the embedding path, with the hardware's limit.

Run: python benchmarks/identification.py [--users 1000,10000,100000] [--probes 1000] [--max-seconds 120]
                                         [--memory-budget-mb 2048]
For each gallery size U (synthetic thetas; speed does not depend on their values), P probes are identified:
  verifiers: `fvjax.eval.personalized.score_matrix` (U x P logits, tiled, users sharded over devices), minus
             each user's threshold, then the top 5 per probe;
  embedding: the pretrained dlib_resnet embeds the P probes (measured on 64 of them), then P x U cosines
             against the enrolled embeddings and the top 5.
Where the verifier pass would exceed --max-seconds, it is timed on fewer probes and projected to P
(marked '*'); the compile of each tile shape is excluded. Printed beside each: achieved multiply-adds per second against a large float32 matmul measured in
the same run, peak memory (max RSS on CPU, device peak on an accelerator), bytes stored per user, and the
gallery size above which the embedding path is faster (crossover).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from common import matmul_macs_per_s, peak_memory_mb, timed
from fvjax import pretrained
from fvjax.eval import personalized
from fvjax.models import count_madds_of, verifier

TOP_K = 5


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
  """[P, k] best entries of scores [P, U] (unordered within the k; what a gallery lookup needs)."""
  return np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--users', default='1000,10000,100000')
  parser.add_argument('--probes', type=int, default=1000)
  parser.add_argument('--max-seconds', type=float, default=120)
  parser.add_argument('--memory-budget-mb', type=int, default=2048)
  args = parser.parse_args()
  spec = verifier.VerifierSpec()
  budget = args.memory_budget_mb << 20
  rng = np.random.default_rng(0)
  madds = count_madds_of(lambda t, x: verifier.apply(t, x, spec), jnp.zeros(spec.num_params),
                         jnp.zeros((1, spec.input_size, spec.input_size, spec.in_channels)))
  peak = matmul_macs_per_s()

  model = pretrained.load('dlib_resnet')
  faces = rng.integers(0, 256, (64, 112, 112, 3), dtype=np.uint8)
  model.embed(faces, flip=False)  # compile
  embed_per_probe = timed(lambda f: model.embed(f, flip=False), faces)[0] / len(faces)

  probes = rng.uniform(-1, 1, (args.probes, spec.input_size, spec.input_size, 3)).astype(np.float32)
  sizes = [int(u) for u in args.users.split(',')]
  unique = np.stack([np.asarray(verifier.init_theta(jax.random.key(i), spec)) for i in range(16)])
  thetas = np.tile(unique, (max(sizes) // len(unique) + 1, 1))
  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}); '
        f'float32 {peak / 1e9:.1f} GMAC/s on a 2048^3 matmul; verifier {spec.num_params:,} params, '
        f'{madds / 1e6:.2f}M MAdds per probe; dlib_resnet {1 / embed_per_probe:.1f} probes/s')
  print(f"{'users':>8}{'probes':>8}{'verifier s':>12}{'probes/s':>10}{'GMAC/s':>8}{'of peak':>9}"
        f"{'embedding s':>13}{'probes/s':>10}{'verif/embed':>13}{'peak MB':>9}")
  warm = lambda: personalized.score_matrix(thetas[:200], probes[:50], spec, budget)
  warm()
  pairs_per_s = 200 * 50 / timed(warm)[0]  # a first estimate, to size each measurement
  for users in sizes:
    gallery = thetas[:users]
    thresholds = rng.normal(size=users).astype(np.float32)
    measured = int(np.clip(args.max_seconds / 2 * pairs_per_s / users, 1, args.probes))
    tile = personalized.tile_shape(users, measured, spec, budget, jax.device_count())
    personalized.score_matrix(gallery[:tile[0]], probes[:measured], spec, budget)  # compiles this tile shape
    seconds, logits = timed(lambda: personalized.score_matrix(gallery, probes[:measured], spec, budget))
    seconds_top, _ = timed(lambda: top_k((logits - thresholds[:, None]).T, TOP_K))
    pairs_per_s = users * measured / seconds
    seconds = (seconds + seconds_top) * args.probes / measured
    mark = '*' if measured < args.probes else ' '

    enrolled = jnp.asarray(rng.normal(size=(users, model.embedding_size)).astype(np.float32))
    queries = jnp.asarray(rng.normal(size=(args.probes, model.embedding_size)).astype(np.float32))
    cosine = jax.jit(lambda q, e: q @ e.T)
    cosine(queries, enrolled).block_until_ready()
    seconds_cos, scores = timed(cosine, queries, enrolled)
    seconds_cos += timed(lambda: top_k(np.asarray(scores), TOP_K))[0] + embed_per_probe * args.probes
    achieved = users * args.probes * madds / seconds
    print(f'{users:>8,}{args.probes:>8}{seconds:>11.1f}{mark}{args.probes / seconds:>10.1f}{achieved / 1e9:>8.1f}'
          f'{achieved / peak:>9.0%}{seconds_cos:>13.2f}{args.probes / seconds_cos:>10.1f}'
          f'{seconds / seconds_cos:>13.1f}{peak_memory_mb():>9.0f}')
  crossover = embed_per_probe * pairs_per_s
  print(f'* timed on fewer probes and projected to {args.probes}. Stored per user: verifier theta '
        f'{4 * spec.num_params:,} B (float32) vs embedding {4 * model.embedding_size:,} B. Crossover: the embedding '
        f'path (backbone on each probe, then cosines) is faster above {crossover:,.0f} users per probe.')


if __name__ == '__main__':
  main()
