"""Does a backbone's raw feature norm carry image quality? Degrade faces on purpose and watch the norm.

FaceCoresetNet (and AdaFace, whose features it was built on) reads the raw feature norm as quality: its first
coreset pick is the highest-norm image, its distance is weighted by norm^gamma, and its norm encoding feeds the
attention. That only helps if, for the backbone at hand, degraded faces get smaller norms, and the norm drops as the
identity information drops. This module measures both on real faces:

- degradations of controlled strength: Gaussian blur, low resolution (down- then up-sampling), and a grey occluder
  over the lower part of the face (mouth and nose);
- per strength: the mean norm relative to the clean image's, and the mean cosine of the degraded descriptor to the
  clean one (how much identity survives);
- over every degraded image: the Spearman rank correlation between its norm ratio and its cosine to the clean
  descriptor. Near 1: the norm ranks images by how much identity they keep (a quality signal FaceCoresetNet can
  use); near 0: it does not.
"""

import dataclasses
import io
import json
from pathlib import Path
from typing import Callable

import ml_collections
import numpy as np
import scipy.stats
from PIL import Image, ImageFilter

from fvjax import backbones, data
from fvjax.eval import verification


@dataclasses.dataclass(frozen=True)
class Degradation:
  """A named image degradation and its strengths (the first one 'none' would be redundant: clean is the base)."""
  name: str
  strengths: tuple[float, ...]
  apply: Callable[[np.ndarray, float], np.ndarray]  # (uint8 [112, 112, 3], strength) -> uint8 [112, 112, 3]


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """The image blurred by a Gaussian of standard deviation `sigma` pixels."""
  return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))


def low_resolution(image: np.ndarray, factor: float) -> np.ndarray:
  """The image sampled down by `factor` (box filter) and back up (bicubic): a face seen from `factor` x further."""
  size = image.shape[0]
  small = Image.fromarray(image).resize((round(size / factor),) * 2, Image.BOX)
  return np.asarray(small.resize((size, size), Image.BICUBIC))


def lower_occlusion(image: np.ndarray, fraction: float) -> np.ndarray:
  """The image with its bottom `fraction` of rows painted mid-grey (a mask or a hand over mouth and nose)."""
  out = image.copy()
  out[image.shape[0] - round(fraction * image.shape[0]):] = 128
  return out


def jpeg(image: np.ndarray, quality: float) -> np.ndarray:
  """The image JPEG-compressed at `quality` (1-95; 10 and below: blocky, as a heavily re-compressed frame)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=int(quality))
  return np.asarray(Image.open(buffer).convert('RGB'))


DEGRADATIONS = (
    Degradation('blur (sigma, px)', (1.0, 2.0, 4.0), gaussian_blur),
    Degradation('low resolution (factor)', (2.0, 4.0, 8.0), low_resolution),
    Degradation('lower occlusion (fraction)', (0.25, 0.4, 0.55), lower_occlusion),
)


# The damage of mixed-quality templates (IJB-style: sharp photos beside blurred, tiny, occluded and re-compressed
# frames): strong levels only, each leaving a face a person still recognises but a backbone partly loses.
MIXED_DEGRADATIONS = (
    Degradation('blur (sigma, px)', (3.0, 4.0, 5.0), gaussian_blur),
    Degradation('low resolution (factor)', (6.0, 8.0, 10.0), low_resolution),
    Degradation('lower occlusion (fraction)', (0.4, 0.5, 0.55), lower_occlusion),
    Degradation('jpeg (quality)', (4.0, 6.0, 8.0), jpeg),
)


def degrade(images: np.ndarray, degradation: Degradation, strength: float) -> np.ndarray:
  """uint8 [N, 112, 112, 3] -> the same images degraded."""
  return np.stack([degradation.apply(image, strength) for image in images])


def random_degradation(image: np.ndarray, rng: np.random.Generator,
                       degradations: tuple[Degradation, ...] = MIXED_DEGRADATIONS) -> np.ndarray:
  """The uint8 face [112, 112, 3] under one degradation and strength drawn uniformly by `rng`."""
  degradation = degradations[rng.integers(len(degradations))]
  return degradation.apply(image, degradation.strengths[rng.integers(len(degradation.strengths))])


def norm_quality_report(features_fn: Callable, images: np.ndarray,
                        degradations: tuple[Degradation, ...] = DEGRADATIONS) -> dict:
  """How the raw feature norm follows degradation, for a backbone `features_fn` on clean uint8 faces [N, 112, 112, 3].

  Returns {'clean_norm': {'mean', 'cv'} (coefficient of variation over the clean images),
  'levels': [{'degradation', 'strength', 'norm_ratio' (mean |f(degraded)| / |f(clean)|), 'cosine_to_clean'}],
  'spearman_norm_vs_identity': rank correlation over all degraded images of norm ratio vs cosine to clean}.
  No flip: the norm of one image's features is what set aggregation reads.
  """
  def raw(batch):
    return verification.embed_images(features_fn, batch, flip=False, normalize_output=False)

  clean = raw(images)
  clean_norm = np.linalg.norm(clean, axis=1)
  clean_unit = clean / clean_norm[:, None]
  levels, ratios, cosines = [], [], []
  for degradation in degradations:
    for strength in degradation.strengths:
      features = raw(degrade(images, degradation, strength))
      norm = np.linalg.norm(features, axis=1)
      ratio, cosine = norm / clean_norm, np.sum(features * clean_unit, axis=1) / norm
      levels.append({'degradation': degradation.name, 'strength': strength, 'norm_ratio': float(ratio.mean()),
                     'cosine_to_clean': float(cosine.mean())})
      ratios.append(ratio)
      cosines.append(cosine)
  rho = scipy.stats.spearmanr(np.concatenate(ratios), np.concatenate(cosines)).statistic
  return {'clean_norm': {'mean': float(clean_norm.mean()), 'cv': float(clean_norm.std() / clean_norm.mean())},
          'levels': levels, 'spearman_norm_vs_identity': float(rho)}


def format_table(reports: dict[str, dict]) -> str:
  """One row per degradation level, a column pair (norm ratio, cosine to clean) per backbone."""
  names = list(reports)
  lines = [f"{'degradation':<28}{'strength':>9}" + ''.join(f'{name[-26:]:>28}' for name in names),
           f"{'':<37}" + ''.join(f"{'norm ratio':>14}{'cos to clean':>14}" for _ in names)]
  first = reports[names[0]]['levels']
  for i, level in enumerate(first):
    cells = ''.join(f"{reports[n]['levels'][i]['norm_ratio']:>14.3f}{reports[n]['levels'][i]['cosine_to_clean']:>14.3f}"
                    for n in names)
    lines.append(f"{level['degradation']:<28}{level['strength']:>9g}{cells}")
  lines.append(f"{'clean norm: mean (cv)':<37}" + ''.join(
      f"{reports[n]['clean_norm']['mean']:>14.3f}{'(' + format(reports[n]['clean_norm']['cv'], '.3f') + ')':>14}"
      for n in names))
  lines.append(f"{'Spearman(norm ratio, cos)':<37}" + ''.join(
      f"{reports[n]['spearman_norm_vs_identity']:>28.3f}" for n in names))
  return '\n'.join(lines)


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """`norm_quality_report` of each of `config.backbones` on the held-out identities of `config.data_dir` (split by
  test_fraction and split_seed, as the CelebA experiments); writes `workdir/report.json` and returns
  {backbone: report}."""
  faces = data.load_faces(config.data_dir, align=config.align)
  _, test_idx = data.split_identities(faces.labels, config.test_fraction, config.split_seed)
  images = data.decode_all(faces, test_idx)
  reports = {source: norm_quality_report(backbones.load(source).features_fn, images) for source in config.backbones}
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'report.json').write_text(json.dumps({'images': len(images), 'backbones': reports}, indent=2))
  return reports
