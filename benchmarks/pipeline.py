"""The training input pipeline at MS1MV2 shape: images/s delivered per decode thread, memory, epoch boundary, resume.

Run: python benchmarks/pipeline.py [--images 100000] [--identities 5000] [--threads 1,2,4] [--steps 30]
                                   [--batch 256] [--dir /tmp/fvjax_pipeline]
Builds (once, kept in --dir) a synthetic insightface `.rec` of 112x112 JPEG crops (quality 95, the size of
MS1MV2's: textured, not flat) in insightface's layout, then measures `fvjax.data.train_batches` through
`fvjax.data.iterate` (grain, decode + flip + normalise in host threads), exactly what `fvjax train` runs on a host:
  - opening the .rec (reading every image's label: what a run pays at start and at every resume);
  - steady-state images/s for each number of decode threads, and per thread;
  - the batches that straddle an epoch boundary (a new shuffle) against mid-epoch ones;
  - the first batch of a resume at a late step against the first at step 0;
  - peak RSS.
It ends with the cores a host needs to keep up with a given training rate (--target, default the README's 6.9k
img/s of seesaw_shuffle on one H100).
"""

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import peak_memory_mb
from fvjax import data


def synthetic_rec(path: Path, images: int, identities: int, seed: int = 0) -> None:
  """A .rec of `images` textured 112x112 JPEG crops of `identities` people, in insightface's layout."""
  rng = np.random.default_rng(seed)
  labels = np.sort(rng.integers(0, identities, images))
  labels = np.searchsorted(np.unique(labels), labels)  # 0..K-1 in order, every identity used
  bases = rng.integers(0, 256, (identities, 14, 14, 3), dtype=np.uint8)
  encoded = []
  for i, label in enumerate(labels):
    texture = np.clip(bases[label].astype(np.int16) + rng.integers(-40, 40, (14, 14, 3)), 0, 255).astype(np.uint8)
    face = Image.fromarray(texture).resize((112, 112), Image.BICUBIC)
    noisy = np.clip(np.asarray(face, np.int16) + rng.integers(-12, 12, (112, 112, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, 'JPEG', quality=95)
    encoded.append(buffer.getvalue())
    if (i + 1) % 20000 == 0:
      print(f'  encoded {i + 1:,} of {images:,}', flush=True)
  data.write_recordio(path, encoded, labels.tolist())


def images_per_s(batches, start: int, steps: int, threads: int, batch: int) -> tuple[float, float]:
  """(steady images/s over `steps` batches after 2 warm-up batches, seconds to the first batch)."""
  begin = time.perf_counter()
  stream = data.iterate(batches, start, num_threads=threads)
  next(stream)
  first = time.perf_counter() - begin
  next(stream)
  begin = time.perf_counter()
  for _ in range(steps):
    next(stream)
  return steps * batch / (time.perf_counter() - begin), first


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--images', type=int, default=100_000)
  parser.add_argument('--identities', type=int, default=5_000)
  parser.add_argument('--threads', default='1,2,4')
  parser.add_argument('--steps', type=int, default=30)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--target', type=float, default=6_900, help='training images/s to feed')
  parser.add_argument('--dir', default='/tmp/fvjax_pipeline')
  args = parser.parse_args()
  folder = Path(args.dir)
  folder.mkdir(parents=True, exist_ok=True)
  rec = folder / f'synthetic_{args.images}_{args.identities}.rec'
  if not rec.is_file():
    print(f'building {rec} ...', flush=True)
    start = time.perf_counter()
    synthetic_rec(rec, args.images, args.identities)
    print(f'  built in {time.perf_counter() - start:.0f} s')

  start = time.perf_counter()
  faces = data.load_faces(rec)
  open_seconds = time.perf_counter() - start
  size = rec.stat().st_size
  print(f'{rec.name}: {len(faces):,} images, {len(faces.names):,} identities, {size / 2**20:,.0f} MB '
        f'({size / len(faces) / 1024:.1f} KB per image); opened (labels read) in {open_seconds:.1f} s; '
        f'{os.cpu_count()} CPU cores')

  batches, _ = data.train_batches(faces, np.arange(len(faces)), args.batch, seed=0)
  steps_per_epoch = len(faces) // args.batch
  print(f"{'threads':>8}{'images/s':>10}{'per thread':>12}{'first batch s':>15}{'resume s':>10}"
        f"{'epoch edge img/s':>18}")
  rates = {}
  for threads in (int(t) for t in args.threads.split(',')):
    rate, first = images_per_s(batches, 0, args.steps, threads, args.batch)
    late = steps_per_epoch * 3 + steps_per_epoch // 2  # mid-epoch 4: a resume far into the run
    _, resume_first = images_per_s(batches, late, 1, threads, args.batch)
    edge = steps_per_epoch - 2  # two batches before, through, and past the first epoch boundary
    edge_rate, _ = images_per_s(batches, edge, min(args.steps, 6), threads, args.batch)
    rates[threads] = rate
    print(f'{threads:>8}{rate:>10,.0f}{rate / threads:>12,.0f}{first:>15.2f}{resume_first:>10.2f}{edge_rate:>18,.0f}')
  best_threads = max(rates, key=rates.get)
  per_core = rates[best_threads] / min(best_threads, os.cpu_count())
  print(f'peak RSS {peak_memory_mb():,.0f} MB. Best: {rates[best_threads]:,.0f} img/s with {best_threads} threads '
        f'on {os.cpu_count()} cores = {per_core:,.0f} img/s per core; {args.target:,.0f} img/s needs about '
        f'{int(np.ceil(args.target / per_core))} such cores decoding (plus what the host needs to drive the device).')


if __name__ == '__main__':
  main()
