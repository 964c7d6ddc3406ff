"""Feature norm vs deliberate degradation (`fvjax.eval.quality`)."""

import numpy as np
import pytest
import scipy.stats

from fvjax.data import degrade
from fvjax.eval import quality


def faces(n=5, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def test_degradations_by_hand():
  image = faces(1)[0]
  occluded = degrade.lower_occlusion(image, 0.25)
  np.testing.assert_array_equal(occluded[:84], image[:84])  # 112 - 28 rows untouched
  assert np.all(occluded[84:] == 128)
  flat = np.full((112, 112, 3), 77, np.uint8)
  np.testing.assert_array_equal(degrade.gaussian_blur(flat, 2.0), flat)  # blur and resampling keep a flat image
  np.testing.assert_array_equal(degrade.low_resolution(flat, 4.0), flat)
  # A checkerboard of 4-pixel cells keeps most of its contrast at factor 2 (cells of 2 pixels, edges softened by the
  # bicubic upsampling) and none at factor 8 (each 8-pixel box averages two black and two white cells to grey).
  board = np.kron((np.indices((28, 28)).sum(0) % 2) * 255, np.ones((4, 4)))[..., None].repeat(3, -1).astype(np.uint8)
  assert degrade.low_resolution(board, 2.0).std() > 0.6 * board.std()
  assert np.all(np.abs(degrade.low_resolution(board, 8.0).astype(int) - 127.5) <= 0.5)
  assert degrade.gaussian_blur(board, 4.0).std() < 0.1 * board.std()


def test_norm_quality_report_against_pixel_features():
  """With the normalised pixels as 'features', every number is plain NumPy on the degraded images."""
  images = faces(7)
  report = quality.norm_quality_report(lambda x: x.reshape(len(x), -1), images)

  def pixels(batch):
    return ((batch.astype(np.float32) / 255 - 0.5) / 0.5).reshape(len(batch), -1)

  clean = pixels(images)
  clean_norm = np.linalg.norm(clean, axis=1)
  assert report['clean_norm']['mean'] == pytest.approx(clean_norm.mean(), rel=1e-5)
  assert report['clean_norm']['cv'] == pytest.approx(clean_norm.std() / clean_norm.mean(), rel=1e-4)
  ratios, cosines = [], []
  levels = iter(report['levels'])
  for degradation in degrade.DEGRADATIONS:
    for strength in degradation.strengths:
      level = next(levels)
      assert (level['degradation'], level['strength']) == (degradation.name, strength)
      degraded = pixels(degrade.degrade(images, degradation, strength))
      norm = np.linalg.norm(degraded, axis=1)
      ratios.append(norm / clean_norm)
      cosines.append(np.sum(degraded * clean, axis=1) / (norm * clean_norm))
      assert level['norm_ratio'] == pytest.approx(ratios[-1].mean(), rel=1e-4)
      assert level['cosine_to_clean'] == pytest.approx(cosines[-1].mean(), rel=1e-4)
  assert next(levels, None) is None
  expected = scipy.stats.spearmanr(np.concatenate(ratios), np.concatenate(cosines)).statistic
  assert report['spearman_norm_vs_identity'] == pytest.approx(expected, abs=1e-6)
  # Blurring noise shrinks its norm and its agreement with the clean image, stronger blur more so.
  blur = [level for level in report['levels'] if level['degradation'].startswith('blur')]
  assert blur[0]['norm_ratio'] > blur[1]['norm_ratio'] > blur[2]['norm_ratio']
  assert blur[0]['cosine_to_clean'] > blur[1]['cosine_to_clean'] > blur[2]['cosine_to_clean']
  table = quality.format_table({'pixels': report})
  assert 'Spearman' in table and f"{report['spearman_norm_vs_identity']:.3f}" in table
