"""The face check (fvjax.facecheck): real aligned faces pass, noise and misplaced faces do not."""

import numpy as np
import pytest
from PIL import Image

from fvjax import align, facecheck


@pytest.fixture(scope='module')
def celeba_crops(request):
  from conftest import SHARED_DATA
  root = SHARED_DATA / 'celeba_aligned'
  if not root.is_dir():
    pytest.skip(f'real CelebA faces not found at {root}')
  return [np.asarray(Image.open(p).convert('RGB')) for p in sorted(root.glob('*/*.jpg'))[::400]]


def test_aligned_faces_pass_where_the_template_says(celeba_crops):
  for crop in celeba_crops:
    check = facecheck.check_crop(crop)
    assert check.passed and check.offset < 8 and 0.8 < check.scale < 1.2 and check.probability > 0.9, check


def test_noise_and_misplaced_faces_fail(celeba_crops):
  noise = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
  assert not facecheck.check_crop(noise).passed and np.isinf(facecheck.check_crop(noise).offset)
  face = celeba_crops[0]
  shifted = np.pad(face, ((0, 0), (40, 0), (0, 0)))[:, :112]  # the face 40 px to the right of where a crop has it
  assert facecheck.check_crop(shifted).offset > facecheck.MAX_OFFSET
  half = np.zeros_like(face)
  half[28:84, 28:84] = np.asarray(Image.fromarray(face).resize((56, 56)))  # centred, at half the size
  check = facecheck.check_crop(half)
  assert check.offset <= facecheck.MAX_OFFSET and check.scale < facecheck.SCALE_RANGE[0] and not check.passed
  with pytest.raises(facecheck.NotAFaceError, match='the face is 0.5. times the size of an aligned face'):
    facecheck.require_face(half, 'half.png')


def test_read_face_checks_crops_only_when_asked(tmp_path):
  path = tmp_path / 'noise.png'
  Image.fromarray(np.random.default_rng(1).integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(path)
  assert align.read_face(path).shape == (112, 112, 3)  # library default: no check
  with pytest.raises(facecheck.NotAFaceError, match='noise.png does not look like an aligned face: no face found'):
    align.read_face(path, face_check=True)
  with pytest.raises(ValueError, match=r'\[112, 112, 3\] crop'):
    facecheck.check_crop(np.zeros((50, 50, 3), np.uint8))
