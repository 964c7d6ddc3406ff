"""The face check (fvjax.facecheck) on real aligned faces and on images that are not faces, one table.

Run:      FVJAX_DATA_DIR=<data> python experiments/face_check.py
Faces:    celeba_aligned (every 10th image; where max_offset was chosen), the AT&T faces shipped in the package
          (scaled and padded to 112x112, as `--align never` and the demo take them), lfw_aligned (every 10th),
          cfp_aligned frontal (every 10th) and profile (every 4th).
Not faces (seeded): uniform RGB noise; noise blurred (Gaussian, radius 2-6 px); textures (stripes, checkerboards,
          smooth gradients, flat colours, random colours and scales); photos without faces (crops of scikit-learn's
          two sample photos, a temple and a flower, at several scales); backgrounds of the 200 raw CFP photos
          (../shared/models/mtcnn/oracle: the corner farthest from the face, where it does not overlap it); and real
          faces that are not where a crop says (CelebA crops shifted by 40 px, shrunk to half size, zoomed 1.5x).
Columns:  images, share rejected at max_offset 16 / 24 (fvjax's default) / 32 px (scale range fixed at
          facecheck.SCALE_RANGE), and the median landmark offset and scale.
Runtime:  about 3 minutes on 2 CPU cores.
"""

import dataclasses
import glob
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from fvjax import detection, facecheck, imageio
from fvjax.data import dataset_path

MAX_OFFSETS = (16.0, facecheck.MAX_OFFSET, 32.0)
ATT = Path(facecheck.__file__).parent / 'assets' / 'att_faces'
ORACLE = Path(__file__).resolve().parents[2] / 'shared' / 'models' / 'mtcnn' / 'oracle' / 'images'


def read(path) -> np.ndarray:
  return np.asarray(Image.open(path).convert('RGB'))


def real_faces() -> dict[str, list[np.ndarray]]:
  every = lambda pattern, step: [read(p) for p in sorted(glob.glob(str(Path(dataset_path(pattern.split('/')[0]))
                                                                       / '/'.join(pattern.split('/')[1:]))))[::step]]
  return {
      'CelebA (aligned)': every('celeba_aligned/*/*.jpg', 10),
      'AT&T (scaled, padded)': [imageio.fit_and_pad(read(p), 112) for p in sorted(ATT.glob('*/*.pgm'))],
      'LFW (aligned)': every('lfw_aligned/*/*.jpg', 10),
      'CFP frontal (aligned)': every('cfp_aligned/*/frontal_*.jpg', 10),
      'CFP profile (aligned)': every('cfp_aligned/*/profile_*.jpg', 4),
  }


def textures(rng, count: int) -> list[np.ndarray]:
  y, x = np.mgrid[:112, :112] / 112
  out = []
  for k in range(count):
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    frequency, angle = rng.uniform(1, 20), rng.uniform(0, np.pi)
    phase = x * np.cos(angle) + y * np.sin(angle)
    kind = k % 4
    if kind == 0:
      mix = (np.sin(2 * np.pi * frequency * phase) > 0).astype(float)
    elif kind == 1:
      mix = ((np.floor(x * frequency) + np.floor(y * frequency)) % 2).astype(float)
    elif kind == 2:
      mix = phase / phase.max()
    else:
      mix = np.zeros_like(x)
    out.append(np.uint8(a * (1 - mix[..., None]) + b * mix[..., None]))
  return out


def photos_without_faces(rng, count: int) -> list[np.ndarray]:
  from sklearn.datasets import load_sample_images  # scikit-learn ships these two photos (test extra)
  photos, out = load_sample_images().images, []
  for k in range(count):
    photo = photos[k % len(photos)]
    side = int(rng.uniform(60, min(photo.shape[:2])))
    top, left = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
    out.append(np.asarray(Image.fromarray(photo[top:top + side, left:left + side]).resize((112, 112))))
  return out


def backgrounds() -> list[np.ndarray]:
  """For each raw CFP photo, the square at the corner farthest from its face, when it does not overlap the face."""
  out = []
  for path in sorted(ORACLE.glob('*.jpg')):
    photo = read(path)
    faces = detection.detect(photo)
    if not len(faces.boxes):
      continue
    x1, y1, x2, y2 = faces.boxes[0]
    height, width = photo.shape[:2]
    side = min(height, width) // 3
    corners = [(0, 0), (0, width - side), (height - side, 0), (height - side, width - side)]
    free = [(t, l) for t, l in corners if l + side <= x1 or l >= x2 or t + side <= y1 or t >= y2]
    if free and side >= 24:
      top, left = max(free, key=lambda c: np.hypot(c[0] + side / 2 - (y1 + y2) / 2, c[1] + side / 2 - (x1 + x2) / 2))
      out.append(np.asarray(Image.fromarray(photo[top:top + side, left:left + side]).resize((112, 112))))
  return out


def misplaced(faces: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
  """Real faces that are not where an aligned crop has them: shifted right by 40 px, shrunk to half, zoomed 1.5x."""
  shrunk = []
  for face in faces:
    canvas = np.zeros_like(face)
    canvas[28:84, 28:84] = np.asarray(Image.fromarray(face).resize((56, 56)))
    shrunk.append(canvas)
  return {'faces shifted 40 px': [np.pad(f, ((0, 0), (40, 0), (0, 0)))[:, :112] for f in faces],
          'faces at half size': shrunk,
          'faces zoomed 1.5x': [np.asarray(Image.fromarray(f).resize((168, 168)))[28:140, 28:140] for f in faces]}


def not_faces(celeba: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
  rng = np.random.default_rng(0)
  noise = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(100)]
  blurred = [np.asarray(Image.fromarray(n).filter(ImageFilter.GaussianBlur(rng.uniform(2, 6)))) for n in noise]
  return {
      'uniform noise': noise,
      'blurred noise': blurred,
      'textures': textures(rng, 100),
      'photos without faces': photos_without_faces(rng, 100),
      'CFP photo backgrounds': backgrounds(),
      **misplaced(celeba[:50]),
  }


def main():
  faces = real_faces()
  groups = [('real aligned faces: false rejects', faces), ('not faces: rejected', not_faces(faces['CelebA (aligned)']))]
  header = ' | '.join(f'max_offset {m:.0f}' for m in MAX_OFFSETS)
  for title, sets in groups:
    print(f'\n{title}\n| set | images | {header} | median offset (px) | median scale |')
    print(f'|---|---|{"---|" * len(MAX_OFFSETS)}---|---|')
    for name, images in sets.items():
      checks = [facecheck.check_crop(image) for image in images]
      rates = ' | '.join(f'{100 * np.mean([not dataclasses.replace(c, max_offset=m).passed for c in checks]):.1f}%'
                         for m in MAX_OFFSETS)
      offsets, scales = np.array([c.offset for c in checks]), np.array([c.scale for c in checks])
      scale = f'{np.nanmedian(scales):.2f}' if np.isfinite(scales).any() else '-'
      print(f'| {name} | {len(images)} | {rates} | {np.median(offsets):.1f} | {scale} |')


if __name__ == '__main__':
  main()
