"""Face geometry: the 112x112 insightface crop, dlib's 150x150 chip, and aligning raw photos to the crop.

Every dataset fvjax reads holds insightface-aligned 112x112 crops: a similarity transform put five landmarks (eye
centres, nose tip, mouth corners) at `INSIGHTFACE_TEMPLATE`. dlib's recogniser was trained on other chips: dlib's
5-point predictor finds the eye corners and the nose base, and `dlib.get_face_chip(image, shape, size=150,
padding=0.25)` maps them to `DLIB_CHIP_TEMPLATE`. On insightface crops dlib's predictor finds its five points at
`DLIB_POINTS_ON_INSIGHTFACE_CROP` (measured on thousands of aligned CelebA crops), so one fixed similarity transform
takes a crop to a dlib chip (`insightface_to_dlib_chip`); a plain 112 -> 150 resize costs about 14 points of pair
accuracy instead.

Resampling is a fixed bilinear gather (`BilinearSampler`) that runs in NumPy on the host or inside a jitted
function; it follows dlib's `extract_image_chip`: pixel centres at integer coordinates, and a pixel whose 2x2
neighbourhood is not wholly inside the source is black.

Raw photos (`align_photo`) are aligned the insightface way by default: MTCNN (`fvjax.detection`, shipped) finds the
face and its five points (eye centres, nose tip, mouth corners), and the least-squares similarity puts them on
`INSIGHTFACE_TEMPLATE`, which is how every insightface dataset was made. The photo is zero-padded by
`EDGE_PADDING` of its longer side before detection, so a face at the edge is not stretched. detector='dlib' uses
dlib's HOG detector and 5-point predictor instead (the optional `align` extra: `pip install 'fvjax[align]'`), whose
points are mapped to where they lie on an insightface crop.
"""

import dataclasses
import functools
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np

from fvjax import imageio

CROP_SIZE = imageio.FACE_SIZE
# insightface's ArcFace template: left eye, right eye, nose tip, left and right mouth corners (x, y), 112x112.
INSIGHTFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                                 [70.7299, 92.2041]])
# dlib's 5-point predictor on insightface crops: its points 0-4 (the face's right eye outer and inner corners,
# left eye outer and inner corners, nose base), in pixels of the 112x112 crop (mean over aligned CelebA crops).
DLIB_POINTS_ON_INSIGHTFACE_CROP = np.array([[80.3, 51.7], [66.0, 52.6], [30.7, 52.1], [45.0, 52.8], [55.7, 80.7]])
# Where `dlib.get_face_chip_details` puts those five points, as fractions of an unpadded chip.
DLIB_CHIP_TEMPLATE = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                               [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                               [0.4901123135679, 0.6277975316475]])
DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25


class FaceNotFoundError(ValueError):
  """A photo in which no face was detected; the message names the file."""


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """The least-squares similarity (rotation, uniform scale, translation; no reflection) taking points src [K, 2]
  to dst [K, 2] (Umeyama, 1991), as a 2x3 matrix A: dst ~ A[:, :2] @ src + A[:, 2]."""
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  src_mean, dst_mean = src.mean(0), dst.mean(0)
  src_c, dst_c = src - src_mean, dst - dst_mean
  covariance = dst_c.T @ src_c / len(src)
  u, s, vt = np.linalg.svd(covariance)
  d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
  rotation = u @ d @ vt
  scale = np.trace(np.diag(s) @ d) / (src_c**2).sum(1).mean()
  linear = scale * rotation
  return np.concatenate([linear, (dst_mean - linear @ src_mean)[:, None]], axis=1)


def dlib_chip_points(size: int = DLIB_CHIP_SIZE, padding: float = DLIB_CHIP_PADDING) -> np.ndarray:
  """Where dlib's face chip of `size` pixels with `padding` puts its 5 landmarks, in chip pixels [5, 2]."""
  return (padding + DLIB_CHIP_TEMPLATE) / (2 * padding + 1) * size


def dlib_chip_to_image(landmarks: np.ndarray, size: int = DLIB_CHIP_SIZE,
                       padding: float = DLIB_CHIP_PADDING) -> np.ndarray:
  """The 2x3 affine map from chip pixels to image pixels of `dlib.get_face_chip(image, landmarks, size, padding)`.

  dlib fits the similarity from the chip template to the landmarks (rotation R, scale s), keeps R and the image
  point of the chip centre (size/2, size/2), and spans an image square of side size * s - 1 (its inclusive pixel
  rectangle) with chip pixels 0..size-1: the chip's centre pixel (size-1)/2 maps to that point, at a scale of
  (size * s - 1) / (size - 1).
  """
  fitted = similarity_transform(dlib_chip_points(size, padding), landmarks)
  scale = np.hypot(*fitted[:, 0])
  centre = fitted[:, :2] @ np.array([size / 2, size / 2]) + fitted[:, 2]
  linear = fitted[:, :2] / scale * (size * scale - 1) / (size - 1)
  return np.concatenate([linear, (centre - linear @ np.full(2, (size - 1) / 2))[:, None]], axis=1)


@dataclasses.dataclass(frozen=True)
class BilinearSampler:
  """A fixed bilinear resampling: output pixel (r, c) = sum_k weights[r, c, k] * source[indices[r, c, k]] over the 4
  neighbours of its source point (flat indices into the source's H*W pixels; weight 0 where outside)."""
  indices: np.ndarray  # int32 [Ho, Wo, 4]
  weights: np.ndarray  # float32 [Ho, Wo, 4]

  @classmethod
  def from_affine(cls, output_to_source: np.ndarray, source_hw: tuple[int, int],
                  output_hw: tuple[int, int]) -> 'BilinearSampler':
    """Samples the source at `output_to_source` (2x3, output (x, y) pixels -> source (x, y) pixels)."""
    height, width = source_hw
    rows, cols = np.meshgrid(np.arange(output_hw[0]), np.arange(output_hw[1]), indexing='ij')
    points = np.stack([cols, rows, np.ones_like(cols)], -1) @ np.asarray(output_to_source, np.float64).T
    x, y = points[..., 0], points[..., 1]
    left, top = np.floor(x), np.floor(y)
    inside = (left >= 0) & (top >= 0) & (left + 1 <= width - 1) & (top + 1 <= height - 1)
    fx, fy = x - left, y - top
    left, top = np.clip(left, 0, width - 2).astype(np.int64), np.clip(top, 0, height - 2).astype(np.int64)
    indices = np.stack([top * width + left, top * width + left + 1, (top + 1) * width + left,
                        (top + 1) * width + left + 1], -1)
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], -1) * inside[..., None]
    return cls(indices.astype(np.int32), weights.astype(np.float32))

  def __call__(self, images):
    """images [..., H, W, C] (NumPy or JAX, any float or integer dtype) -> float32 [..., Ho, Wo, C]."""
    flat = images.reshape(*images.shape[:-3], -1, images.shape[-1]).astype(np.float32)
    out_hw = self.indices.shape[:2]
    total = 0
    for k in range(4):  # one flat `take` per neighbour: far faster under XLA than a fancy-indexed gather
      neighbour = flat.take(self.indices[..., k].ravel(), axis=-2)
      total = total + neighbour.reshape(*flat.shape[:-2], *out_hw, flat.shape[-1]) * self.weights[..., k, None]
    return total


@functools.cache
def insightface_to_dlib_chip() -> BilinearSampler:
  """The fixed resampling of a 112x112 insightface crop into dlib's 150x150 chip (padding 0.25)."""
  return BilinearSampler.from_affine(dlib_chip_to_image(DLIB_POINTS_ON_INSIGHTFACE_CROP), (CROP_SIZE, CROP_SIZE),
                                     (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE))


_ALIGN_EXTRA = "pip install 'fvjax[align]'"


def dlib_model_file(name: str) -> str:
  """Path of one of dlib's model files shipped by the face-recognition-models package, e.g.
  'shape_predictor_5_face_landmarks.dat'. The package is located, never imported: its __init__ needs
  pkg_resources, which setuptools >= 81 no longer ships."""
  spec = importlib.util.find_spec('face_recognition_models')
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"dlib's model files come from face-recognition-models: {_ALIGN_EXTRA}")
  path = Path(next(iter(spec.submodule_search_locations))) / 'models' / name
  if not path.is_file():
    raise FileNotFoundError(f'{path} is missing: the face-recognition-models install is incomplete ({_ALIGN_EXTRA})')
  return str(path)


@functools.cache
def _dlib_models():
  try:
    import dlib
  except ImportError as e:
    raise ImportError(f'aligning raw photos needs dlib and its landmark model: {_ALIGN_EXTRA}') from e
  return dlib.get_frontal_face_detector(), dlib.shape_predictor(dlib_model_file('shape_predictor_5_face_landmarks.dat'))


DETECTORS = ('mtcnn', 'dlib')
SELECTIONS = ('largest', 'centre')
EDGE_PADDING = 0.3  # of the photo's longer side, zero-filled around it before MTCNN runs


def _pick(boxes: np.ndarray, image_hw: tuple[int, int], select: str) -> int:
  """Index of the largest box [K, 4] (x1, y1, x2, y2), or of the one whose centre is nearest the image centre."""
  if select == 'largest':
    return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
  centres = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
  return int(np.argmin(np.linalg.norm(centres - np.array(image_hw[::-1]) / 2, axis=1)))


def _mtcnn_landmarks(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  from fvjax import detection  # JAX, imported only when a photo is aligned
  faces = detection.detect(image, detection.DetectorConfig(edge_padding=EDGE_PADDING))
  return faces.boxes, faces.landmarks


def _dlib_landmarks(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  detector, predictor = _dlib_models()
  import dlib  # present once _dlib_models() succeeded
  image = np.ascontiguousarray(image, np.uint8)
  rects = detector(image, 1)
  boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float64).reshape(-1, 4)
  shapes = [predictor(image, dlib.rectangle(r.left(), r.top(), r.right(), r.bottom())) for r in rects]
  return boxes, np.array([[[p.x, p.y] for p in shape.parts()] for shape in shapes], np.float64).reshape(-1, 5, 2)


def detect_landmarks(image: np.ndarray, source: str = '<image>', detector: str = 'mtcnn',
                     select: str = 'largest') -> np.ndarray:
  """The 5 landmarks [5, 2] (x, y pixels) of one face in uint8 RGB [H, W, 3]: the largest face, or the one nearest
  the centre (`select`). MTCNN's points are insightface's (eye centres, nose tip, mouth corners); dlib's are its
  5-point predictor's (eye corners, nose base). Warns when there are several faces; raises FaceNotFoundError naming
  `source` when there is none."""
  if detector not in DETECTORS:
    raise ValueError(f'unknown detector {detector!r}; expected one of {DETECTORS}')
  if select not in SELECTIONS:
    raise ValueError(f'unknown face selection {select!r}; expected one of {SELECTIONS}')
  boxes, landmarks = (_mtcnn_landmarks if detector == 'mtcnn' else _dlib_landmarks)(image)
  if not len(boxes):
    raise FaceNotFoundError(f'no face found in {source}')
  index = _pick(boxes, image.shape[:2], select)
  if len(boxes) > 1:
    width, height = boxes[index, 2:4] - boxes[index, 0:2]
    warnings.warn(f'{len(boxes)} faces in {source}: using the {select} one ({width:.0f}x{height:.0f} pixels)')
  return landmarks[index]


def crop_from_landmarks(image: np.ndarray, landmarks: np.ndarray,
                        template: np.ndarray = INSIGHTFACE_TEMPLATE) -> np.ndarray:
  """uint8 [H, W, 3] and 5 landmarks [5, 2] (x, y pixels) -> the 112x112 crop that puts them on `template`.

  The least-squares similarity between the two point sets, sampled bilinearly (zeros outside the image), as
  insightface's `norm_crop` (estimate_norm + cv2.warpAffine) does with its 5-point template. Landmark order is the
  template's: for INSIGHTFACE_TEMPLATE left eye, right eye, nose tip, left and right mouth corners.
  """
  crop_to_image = similarity_transform(template, landmarks)
  sampler = BilinearSampler.from_affine(crop_to_image, image.shape[:2], (CROP_SIZE, CROP_SIZE))
  return np.clip(np.rint(sampler(np.asarray(image))), 0, 255).astype(np.uint8)


def align_photo(image: np.ndarray, source: str = '<image>', detector: str = 'mtcnn',
                select: str = 'largest') -> np.ndarray:
  """A raw photo, uint8 RGB [H, W, 3], -> one face (`detect_landmarks`) as an insightface-aligned uint8 crop
  [112, 112, 3]."""
  template = INSIGHTFACE_TEMPLATE if detector == 'mtcnn' else DLIB_POINTS_ON_INSIGHTFACE_CROP
  return crop_from_landmarks(image, detect_landmarks(image, source, detector, select), template)


ALIGN_MODES = ('auto', 'always', 'never')


def read_face(path: str | os.PathLike, mode: str = 'auto', detector: str = 'mtcnn', face_check: bool = False,
              select: str = 'largest') -> np.ndarray:
  """An image file -> an insightface-aligned uint8 crop [112, 112, 3].

  mode: 'always' aligns one face (`align_photo`: the largest, or the one nearest the centre with
  select='centre'); 'never' takes the image as an aligned crop
  (other sizes are scaled and padded, `imageio.decode_face`); 'auto' takes 112x112 images as aligned crops and
  aligns every other image. face_check: an image taken as a crop must hold a face where an aligned crop has one
  (`fvjax.facecheck.require_face`, raising NotAFaceError); an aligned photo has one by construction.
  """
  if mode not in ALIGN_MODES:
    raise ValueError(f'unknown align mode {mode!r}; expected one of {ALIGN_MODES}')
  image = imageio.decode_image(Path(path).read_bytes(), source=str(path))
  is_crop = image.shape[:2] == (CROP_SIZE, CROP_SIZE)
  if mode == 'never' or (mode == 'auto' and is_crop):
    crop = image if is_crop else imageio.fit_and_pad(image, CROP_SIZE)
    if face_check:
      from fvjax import facecheck  # it imports this module
      facecheck.require_face(crop, source=str(path))
    return crop
  return align_photo(image, source=str(path), detector=detector, select=select)
