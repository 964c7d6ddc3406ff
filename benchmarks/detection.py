"""Face detection on raw photos: fvjax's MTCNN beside dlib's HOG detector (what `fvjax.align` used before), one run.

Run: python benchmarks/detection.py [--photos ../shared/models/mtcnn/oracle/images] [--count 20]
Speed: images per second on the photos resized to 250x250 and to 1024x768, detection only, timed on a second pass
over them (the first compiles MTCNN's bucketed shapes; its time is the 'first pass' column): MTCNN with its defaults,
dlib's HOG detector with one upsampling (as `fvjax.align` calls it). Found: the share of the folder's photos (at
their own sizes) in which each detector finds at least one face, frontal and profile photos apart when the names say
which (`<id>_<frontal|profile>_<n>.jpg`). dlib needs pip install -e '.[align]'; its rows are skipped without it.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fvjax import align, detection

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / 'shared' / 'models' / 'mtcnn' / 'oracle' / 'images'
SIZES = ((250, 250), (1024, 768))  # (width, height)


def detectors() -> dict:
  """name -> fn(uint8 [H, W, 3]) -> number of faces found."""
  found = {'fvjax MTCNN': lambda image: len(detection.detect(image).boxes)}
  try:
    hog = align._dlib_models()[0]
    found['dlib HOG (upsample 1)'] = lambda image: len(hog(np.ascontiguousarray(image), 1))
  except ImportError:
    print("dlib rows skipped: pip install -e '.[align]'")
  return found


def images_per_second(fn, images) -> tuple[float, float]:
  """(first pass, second pass) images per second."""
  rates = []
  for _ in range(2):
    start = time.perf_counter()
    for image in images:
      fn(image)
    rates.append(len(images) / (time.perf_counter() - start))
  return tuple(rates)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--photos', type=Path, default=DEFAULT_PHOTOS)
  parser.add_argument('--count', type=int, default=20, help='photos per size in the speed rows')
  args = parser.parse_args()
  paths = sorted(args.photos.glob('*.jpg'))
  if not paths:
    raise SystemExit(f'no .jpg photos in {args.photos}')
  photos = [np.asarray(Image.open(p).convert('RGB')) for p in paths]
  runs = detectors()

  print(f'speed, images/s ({args.count} photos per size, detection only; first pass in brackets)')
  print(f"| detector | {' | '.join(f'{w}x{h}' for w, h in SIZES)} |\n|---|{'---|' * len(SIZES)}")
  for name, fn in runs.items():
    rates = [images_per_second(fn, [np.asarray(Image.fromarray(p).resize(size, Image.BILINEAR))
                                     for p in photos[:args.count]]) for size in SIZES]
    print(f"| {name} | {' | '.join(f'{warm:.1f} ({first:.1f})' for first, warm in rates)} |")

  kinds = {'all': [True] * len(paths), 'frontal': ['_frontal_' in p.name for p in paths],
           'profile': ['_profile_' in p.name for p in paths]}
  kinds = {k: np.array(v) for k, v in kinds.items() if any(v)}
  print(f'\nphotos with a face found, of {len(paths)} in {args.photos.name}/ at their own sizes')
  print(f"| detector | {' | '.join(f'{k} ({m.sum()})' for k, m in kinds.items())} |\n|---|{'---|' * len(kinds)}")
  for name, fn in runs.items():
    hits = np.array([fn(p) > 0 for p in photos])
    print(f"| {name} | {' | '.join(f'{100 * hits[m].mean():.1f}%' for m in kinds.values())} |")


if __name__ == '__main__':
  main()
