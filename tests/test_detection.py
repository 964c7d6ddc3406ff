"""MTCNN (fvjax.detection, fvjax.models.mtcnn) against facenet-pytorch's own detections and hand-computed cases."""

import json

import jax
import numpy as np
import pytest
from flax import traverse_util
from PIL import Image

from conftest import SHARED_DATA
from fvjax import detection
from fvjax.models import mtcnn

MTCNN_DIR = SHARED_DATA.parent / 'models' / 'mtcnn'


@pytest.fixture(scope='module')
def mtcnn_dir():
  if not (MTCNN_DIR / 'oracle' / 'detections.json').is_file():
    pytest.skip(f'MTCNN reference weights and oracle not found at {MTCNN_DIR}')
  return MTCNN_DIR


def test_shipped_weights_are_the_reference_weights_converted(mtcnn_dir):
  shipped = detection.load_variables()
  for name in mtcnn.NETWORKS:
    reference = dict(np.load(mtcnn_dir / f'{name}.npz'))
    converted = traverse_util.flatten_dict(mtcnn.variables_from_reference(reference))
    assert set(converted) == set(traverse_util.flatten_dict(shipped[name]))
    for key, value in converted.items():
      np.testing.assert_array_equal(traverse_util.flatten_dict(shipped[name])[key], value)
    assert sum(v.size for v in reference.values()) == sum(v.size for v in converted.values())
  pnet = traverse_util.flatten_dict(shipped['pnet'])
  assert pnet['params', 'conv1', 'kernel'].shape == (3, 3, 3, 10)  # torch [10, 3, 3, 3] -> HWIO


def test_every_oracle_photo_gives_the_reference_faces(mtcnn_dir):
  """facenet-pytorch 2.6.0's MTCNN(keep_all=True).detect on 200 raw CFP photos (frontal and profile, 42-2,381 px):
  the same number of faces everywhere, and boxes, landmarks and probabilities equal to float32 rounding."""
  oracle = json.loads((mtcnn_dir / 'oracle' / 'detections.json').read_text())['records']
  assert len(oracle) == 200
  box_errors, landmark_errors, prob_errors = [], [], []
  for record in oracle:
    image = np.asarray(Image.open(mtcnn_dir / 'oracle' / record['image']).convert('RGB'))
    faces = detection.detect(image)
    expected = np.asarray(record['boxes'] or np.zeros((0, 4)), np.float32).reshape(-1, 4)
    assert len(faces.boxes) == len(expected), record['image']
    if not len(expected):
      continue
    # The reference lists faces largest first, fvjax most probable first: pair them by box.
    match = [np.abs(faces.boxes - box).sum(1).argmin() for box in expected]
    assert sorted(match) == list(range(len(expected))), record['image']
    box_errors.append(np.abs(faces.boxes[match] - expected).max())
    landmark_errors.append(np.abs(faces.landmarks[match] - np.asarray(record['landmarks'], np.float32)).max())
    prob_errors.append(np.abs(faces.probs[match] - np.asarray(record['probs'], np.float32)).max())
  assert max(box_errors) < 0.01 and max(landmark_errors) < 0.01, (max(box_errors), max(landmark_errors))
  assert max(prob_errors) < 1e-5


def test_area_resize_averages_the_covered_pixels():
  image = np.arange(12, dtype=np.float32).reshape(3, 4, 1)  # rows [0..3], [4..7], [8..11]
  halved = detection.area_resize(image, 3, 2)[..., 0]
  np.testing.assert_allclose(halved, [[0.5, 2.5], [4.5, 6.5], [8.5, 10.5]])
  # 3 -> 2 rows: windows [0, 2) and [1, 3) overlap (adaptive average pooling).
  np.testing.assert_allclose(detection.area_resize(image, 2, 4)[..., 0], [[2, 3, 4, 5], [6, 7, 8, 9]])
  # Upsampling repeats: 2 -> 3 cells take cells 0, 0..1, 1.
  np.testing.assert_allclose(detection.area_resize(np.array([[[0.], [4.]]]), 1, 3)[0, :, 0], [0, 2, 4])


def test_ceil_mode_pool_pools_the_partial_edge_window():
  x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
  pooled = np.asarray(mtcnn.max_pool_ceil(x, 2, 2))[0, ..., 0]
  assert pooled.shape == (3, 3)
  np.testing.assert_array_equal(pooled, [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
  assert np.asarray(mtcnn.max_pool_ceil(np.zeros((1, 11, 11, 1)), 3, 2)).shape == (1, 5, 5, 1)


@pytest.mark.parametrize('height,width', [(23, 30), (24, 31), (37, 12)])
def test_pnet_on_a_padded_input_equals_pnet_on_the_image(height, width):
  """Zero-padding to a bucket, with valid_hw, leaves every output cell of the real image unchanged, whether the
  ceil-mode pool's last window is partial (odd conv1 output) or not."""
  variables = detection.load_variables()['pnet']
  image = np.random.default_rng(0).uniform(-1, 1, (1, height, width, 3)).astype(np.float32)
  padded = np.zeros((1, 64, 64, 3), np.float32)
  padded[:, :height, :width] = image
  probs, offsets = mtcnn.PNet().apply(variables, image)
  padded_probs, padded_offsets = mtcnn.PNet().apply(variables, padded, np.array([height, width]))
  out_h, out_w = mtcnn.pnet_output_size(height), mtcnn.pnet_output_size(width)
  assert probs.shape == (1, out_h, out_w)
  np.testing.assert_allclose(padded_probs[:, :out_h, :out_w], probs, atol=1e-6)
  np.testing.assert_allclose(padded_offsets[:, :out_h, :out_w], offsets, atol=1e-5)


def test_pnet_bucket_wastes_at_most_an_eighth():
  for n in range(12, 3000):
    bucket = detection.pnet_bucket(n)
    assert n <= bucket <= max(n + 31, n * 9 / 8), n
  assert len({detection.pnet_bucket(n) for n in range(1025, 2049)}) == 8  # 1152, 1280, ..., 2048


def test_nms_by_hand():
  boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 4, 4]], np.float32)
  scores = np.array([0.9, 0.95, 0.8, 0.7], np.float32)
  # IoU(0, 1) = 90 / 110 > 0.5; box 3 overlaps box 1 by 12 / (100 + 16 - 12) < 0.5.
  np.testing.assert_array_equal(detection.nms(boxes, scores, 0.5), [1, 2, 3])
  # 'min': box 3 lies inside box 1 (inclusive areas): intersection / smaller area = 1 > 0.7.
  np.testing.assert_array_equal(detection.nms(boxes, scores, 0.7, overlap='min'), [1, 2])


def test_square_and_regress_by_hand():
  np.testing.assert_allclose(detection.square(np.array([[0., 0., 10., 4.]])), [[0, -3, 10, 7]])
  moved = detection.regress(np.array([[0., 0., 9., 19.]]), np.array([[0.1, 0.1, -0.1, 0.0]]))
  np.testing.assert_allclose(moved, [[1, 2, 8, 19]])  # inclusive sides 10 and 20


def test_edge_padding_reports_in_the_photo_s_own_pixels(mtcnn_dir):
  """A tightly cropped face, detected with and without zero-padding: the same face, in the same coordinates."""
  name = json.loads((mtcnn_dir / 'oracle' / 'detections.json').read_text())['records'][0]['image']
  image = np.asarray(Image.open(mtcnn_dir / 'oracle' / name).convert('RGB'))
  plain = detection.detect(image)
  padded = detection.detect(image, detection.DetectorConfig(edge_padding=0.3))
  assert len(plain.boxes) == len(padded.boxes) == 1
  eye_distance = np.linalg.norm(plain.landmarks[0, 1] - plain.landmarks[0, 0])
  assert np.abs(padded.landmarks - plain.landmarks).max() < 0.25 * eye_distance


def test_no_face_in_noise_and_bad_images_refused():
  noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
  faces = detection.detect(noise)
  assert faces.boxes.shape == (0, 4) and faces.landmarks.shape == (0, 5, 2)
  with pytest.raises(ValueError, match=r'\[H, W, 3\]'):
    detection.detect(np.zeros((10, 10), np.uint8))
  with pytest.raises(ValueError, match='uint8'):
    detection.detect(np.zeros((10, 10, 3), np.float32))
  with pytest.raises(ValueError, match='factor'):
    detection.DetectorConfig(factor=1.5)


def test_detect_batch_equals_detect_per_image(mtcnn_dir):
  records = json.loads((mtcnn_dir / 'oracle' / 'detections.json').read_text())['records'][:3]
  images = [np.asarray(Image.open(mtcnn_dir / 'oracle' / r['image']).convert('RGB')) for r in records]
  for faces, image in zip(detection.detect_batch(images), images):
    jax.tree.map(np.testing.assert_array_equal, faces, detection.detect(image))


def test_a_raw_photo_aligns_without_dlib(mtcnn_dir, monkeypatch, tmp_path):
  """The core install aligns photos: MTCNN ships in the package, dlib is not imported."""
  import sys
  from fvjax import align
  monkeypatch.setitem(sys.modules, 'dlib', None)  # `import dlib` now fails
  name = json.loads((mtcnn_dir / 'oracle' / 'detections.json').read_text())['records'][0]['image']
  crop = align.read_face(mtcnn_dir / 'oracle' / name)
  assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
  with pytest.raises(ImportError):
    align.read_face(mtcnn_dir / 'oracle' / name, detector='dlib')
