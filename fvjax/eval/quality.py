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

import json
from pathlib import Path
from typing import Callable

import ml_collections
import numpy as np
import scipy.stats

from fvjax import backbones, data
from fvjax.data.degrade import DEGRADATIONS, Degradation, degrade
from fvjax.eval import verification


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
