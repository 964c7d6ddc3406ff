"""Embedding throughput of the pretrained dlib_resnet: fvjax's jitted port beside dlib's own C++ model.

Run: python benchmarks/pretrained.py [--batch 64] [--iters 3]
Rows, all on the same random uint8 crops in one run: fvjax `embed` on 112x112 insightface crops (chip resampling
included), the bare network on 150x150 chips, and dlib's `compute_face_descriptor` on the same chips (needs
pip install -e '.[align]'; skipped without it). 'vs dlib' is images/s divided by dlib's.
"""

import argparse
import time

import jax
import numpy as np

from fvjax import align, pretrained
from fvjax.models import dlib_resnet


def images_per_second(fn, batch: int, iters: int) -> float:
  jax.block_until_ready(fn())  # compile + warm up
  start = time.perf_counter()
  for _ in range(iters):
    jax.block_until_ready(fn())
  return batch * iters / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--iters', type=int, default=3)
  args = parser.parse_args()
  model = pretrained.load('dlib_resnet')
  rng = np.random.default_rng(0)
  crops = rng.integers(0, 256, (args.batch, 112, 112, 3), dtype=np.uint8)
  chips = rng.integers(0, 256, (args.batch, *dlib_resnet.INPUT_SHAPE), dtype=np.uint8)
  network = jax.jit(lambda x: model.module.apply(model.variables, dlib_resnet.preprocess(x)))
  rows = {
      'fvjax embed (112 crops)': images_per_second(lambda: model.embed(crops, batch_size=args.batch), args.batch,
                                                   args.iters),
      'fvjax network (150 chips)': images_per_second(lambda: network(chips), args.batch, args.iters),
  }
  try:
    import dlib
    recogniser = dlib.face_recognition_model_v1(align.dlib_model_file('dlib_face_recognition_resnet_model_v1.dat'))
    chip_list = list(chips)
    rows['dlib compute_face_descriptor'] = images_per_second(
        lambda: recogniser.compute_face_descriptor(chip_list), args.batch, args.iters)
  except ImportError:
    print("dlib row skipped: pip install -e '.[align]'")
  base = rows.get('dlib compute_face_descriptor')
  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}), batch {args.batch}')
  print(f"{'dlib_resnet':<32}{'img/s':>10}{'vs dlib':>9}")
  for name, speed in rows.items():
    print(f"{name:<32}{speed:>10.1f}{(speed / base if base else float('nan')):>9.2f}")


if __name__ == '__main__':
  main()
