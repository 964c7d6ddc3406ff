"""Face detection with MTCNN, the detector that aligned every insightface dataset; its weights ship in the package.

```python
from fvjax import detection
faces = detection.detect(image)         # uint8 RGB [H, W, 3]
faces.boxes      # float32 [K, 4]  x1, y1, x2, y2 in image pixels, most probable face first
faces.probs      # float32 [K]     O-Net's face probability
faces.landmarks  # float32 [K, 5, 2]  (x, y): left eye, right eye, nose, left and right mouth corner
```

The cascade follows the usual MTCNN pipeline (the original release and facenet-pytorch's `detect_face`, whose
outputs `tests/test_detection.py` compares against):
1. an image pyramid (scales 12 / min_face_size * factor^k while the shorter side stays >= 12 px, each level
   area-resampled to int(side * scale + 1)); P-Net scores every 12x12 window; windows with face probability >=
   thresholds[0] become boxes, suppressed at IoU 0.5 within a scale and 0.7 across scales, moved by their offsets and
   made square;
2. each box cropped (clipped to the image) and area-resampled to 24x24 for R-Net; those above thresholds[1] are
   suppressed at IoU 0.7, moved by R-Net's offsets, made square;
3. the same at 48x48 for O-Net, whose landmarks are placed in the box it saw; boxes above thresholds[2] are moved by
   O-Net's offsets and suppressed where one covers 70% of a smaller one.

The networks run under `jax.jit`: P-Net on each pyramid level zero-padded to a bucketed size (`pnet_bucket`; its
output cells over the real image are unchanged, `mtcnn.PNet`), R-Net and O-Net on batches padded to a power of two,
so images of many sizes reuse a few compiled shapes. The host does what is dynamic: resampling, selecting
and suppressing boxes.

`edge_padding` fixes a weakness of the reference: a box that runs past the image edge is clipped and the clipped
crop stretched to the network's input, which misplaces the landmarks of tightly cropped faces. With edge_padding p
the photo is first zero-padded by p times its longer side on every side; results are in the original photo's
pixels either way.
"""

import dataclasses
import functools
from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import numpy as np
from flax import traverse_util

from fvjax.models import mtcnn

WEIGHTS = Path(__file__).parent / 'pretrained' / 'mtcnn' / 'mtcnn.npz'
PNET_BUCKET = 32
MIN_BATCH = 8


class Faces(NamedTuple):
  """The faces found in one image, most probable first."""
  boxes: np.ndarray  # float32 [K, 4] x1, y1, x2, y2
  probs: np.ndarray  # float32 [K]
  landmarks: np.ndarray  # float32 [K, 5, 2] (x, y)


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  """The cascade's settings; the defaults are the usual MTCNN (and facenet-pytorch's)."""
  min_face_size: float = 20.0
  factor: float = 0.709
  thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
  edge_padding: float = 0.0  # zero-pad by this fraction of the longer side before detecting (0: the reference)

  def __post_init__(self):
    if not self.min_face_size >= 12:
      raise ValueError(f'min_face_size must be >= 12 pixels, got {self.min_face_size}')
    if not 0 < self.factor < 1:
      raise ValueError(f'factor must be in (0, 1), got {self.factor}')
    if len(self.thresholds) != 3 or not all(0 <= t < 1 for t in self.thresholds):
      raise ValueError(f'thresholds must be three probabilities in [0, 1), got {self.thresholds}')
    if not self.edge_padding >= 0:
      raise ValueError(f'edge_padding must be >= 0, got {self.edge_padding}')


@functools.cache
def load_variables() -> dict:
  """The shipped weights: {'pnet': variables, 'rnet': ..., 'onet': ...}."""
  with np.load(WEIGHTS) as arrays:
    return traverse_util.unflatten_dict({tuple(k.split('/')): arrays[k] for k in arrays.files})


@functools.cache
def _networks():
  variables = load_variables()
  run = lambda module: jax.jit(functools.partial(module.apply, variables[module.__class__.__name__.lower()]))
  return run(mtcnn.PNet()), run(mtcnn.RNet()), run(mtcnn.ONet())


def integral_image(image: np.ndarray) -> np.ndarray:
  """[H, W, C] -> float64 [H + 1, W + 1, C]: entry (y, x) is the sum of image[:y, :x]."""
  totals = np.zeros((image.shape[0] + 1, image.shape[1] + 1, image.shape[2]), np.float64)
  totals[1:, 1:] = image.cumsum(0, dtype=np.float64).cumsum(1)
  return totals


def _area_windows(starts: np.ndarray, ends: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Windows [K, size] of area resampling over pixel ranges [starts, ends) [K]: output cell i averages
  floor(i * n / size) .. ceil((i + 1) * n / size) - 1 of the n = ends - starts pixels (adaptive average pooling)."""
  n, i = (ends - starts)[:, None], np.arange(size)[None, :]
  return starts[:, None] + (i * n) // size, starts[:, None] - ((-(i + 1) * n) // size)


def area_crops(integral: np.ndarray, regions: np.ndarray, height: int, width: int) -> np.ndarray:
  """Regions [K, 4] (top, left, bottom, right; pixel ranges, ends exclusive) of the image whose `integral_image` is
  given, each area-resampled (as PyTorch's interpolate(mode='area')) -> float32 [K, height, width, C]."""
  top, left, bottom, right = np.asarray(regions, np.int64).T
  row_start, row_end = _area_windows(top, bottom, height)
  col_start, col_end = _area_windows(left, right, width)
  r0, r1 = row_start[:, :, None], row_end[:, :, None]
  c0, c1 = col_start[:, None, :], col_end[:, None, :]
  sums = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
  return (sums / ((r1 - r0) * (c1 - c0))[..., None]).astype(np.float32)


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """[H, W, C] -> float32 [height, width, C] by area resampling."""
  return area_crops(integral_image(image), np.array([[0, 0, *image.shape[:2]]]), height, width)[0]


def pyramid_scales(height: int, width: int, config: DetectorConfig) -> list[float]:
  """Scales of the image pyramid: 12 / min_face_size, times factor, while the scaled shorter side is >= 12."""
  scale, shorter, scales = 12.0 / config.min_face_size, min(height, width) * 12.0 / config.min_face_size, []
  while shorter >= 12:
    scales.append(scale)
    scale, shorter = scale * config.factor, shorter * config.factor
  return scales


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, overlap: str = 'iou') -> np.ndarray:
  """Greedy non-maximum suppression: indices kept, best score first.

  overlap 'iou': intersection over union of continuous boxes (area (x2 - x1) * (y2 - y1)); 'min': intersection
  over the smaller box, with inclusive pixel areas (x2 - x1 + 1) * (y2 - y1 + 1), as MTCNN's last stage.
  Equal scores (O-Net's often saturate at 1.0) are ordered as the reference orders them: by index for 'iou'
  (PyTorch's sort), by NumPy's default argsort taken from its end for 'min' (the original NumPy code).
  """
  one = 1.0 if overlap == 'min' else 0.0
  x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
  areas = (x2 - x1 + one) * (y2 - y1 + one)
  order = np.argsort(scores)[::-1] if overlap == 'min' else np.argsort(-scores, kind='stable')
  keep = []
  while order.size:
    best, rest = order[0], order[1:]
    keep.append(best)
    inter = (np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + one)
             * np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + one))
    if overlap == 'min':
      ratio = inter / np.minimum(areas[best], areas[rest])
    else:
      ratio = inter / (areas[best] + areas[rest] - inter)
    order = rest[ratio <= threshold]
  return np.asarray(keep, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
  """Boxes [K, 4] -> the squares of side max(width, height) around the same centres."""
  sizes = boxes[:, 2:4] - boxes[:, 0:2]
  side = sizes.max(1, keepdims=True)
  corner = boxes[:, 0:2] + 0.5 * sizes - 0.5 * side
  return np.concatenate([corner, corner + side], 1)


def regress(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool = True) -> np.ndarray:
  """Moves each edge of boxes [K, 4] by offsets [K, 4] times the box's width (x) or height (y); `inclusive`
  measures sides as pixel counts (x2 - x1 + 1), as R-Net's and O-Net's regressions do; P-Net's uses x2 - x1."""
  sizes = boxes[:, 2:4] - boxes[:, 0:2] + (1.0 if inclusive else 0.0)
  return boxes + offsets * np.tile(sizes, 2)


def crop_patches(integral: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Each box's pixels, clipped to the image and area-resampled to size x size: float32 [K', size, size, C], and
  the indices [K'] of the boxes with a non-empty crop. Box corners are truncated to integers; box (x1, y1, x2, y2)
  covers pixels x1 - 1 .. x2 - 1 (the reference's one-based convention). integral: the image's `integral_image`."""
  height, width = integral.shape[0] - 1, integral.shape[1] - 1
  corners = np.trunc(boxes).astype(np.int64)
  x1, y1 = np.maximum(corners[:, 0], 1), np.maximum(corners[:, 1], 1)
  x2, y2 = np.minimum(corners[:, 2], width), np.minimum(corners[:, 3], height)
  kept = np.flatnonzero((x2 > x1 - 1) & (y2 > y1 - 1))
  regions = np.stack([y1 - 1, x1 - 1, y2, x2], 1)[kept]
  return area_crops(integral, regions, size, size), kept


def _run_padded(network, patches: np.ndarray):
  """A jitted network on a batch padded to a power of two (>= MIN_BATCH), outputs cut back to the batch."""
  count = len(patches)
  padded = max(MIN_BATCH, 1 << (count - 1).bit_length())
  batch = np.zeros((padded, *patches.shape[1:]), np.float32)
  batch[:count] = mtcnn.normalize(patches)
  return [np.asarray(out)[:count] for out in network(batch)]


def pnet_bucket(n: int) -> int:
  """The padded side P-Net is compiled for: n rounded up to a multiple of max(PNET_BUCKET, 2^floor(log2 n) / 8),
  so padding wastes at most 1/8 of a side and every octave of sizes shares 8 shapes."""
  step = max(PNET_BUCKET, 1 << max(0, n.bit_length() - 4))
  return -(-n // step) * step


def _proposals(integral: np.ndarray, config: DetectorConfig) -> np.ndarray:
  """Stage 1: P-Net over the pyramid -> square candidate boxes [K, 4]."""
  pnet = _networks()[0]
  height, width = integral.shape[0] - 1, integral.shape[1] - 1
  found = []
  for scale in pyramid_scales(height, width, config):
    level_h, level_w = int(height * scale + 1), int(width * scale + 1)
    level = mtcnn.normalize(area_crops(integral, np.array([[0, 0, height, width]]), level_h, level_w)[0])
    padded = np.zeros((1, pnet_bucket(level_h), pnet_bucket(level_w), 3), np.float32)
    padded[0, :level_h, :level_w] = level
    probs, offsets = pnet(padded, np.array([level_h, level_w]))
    out_h, out_w = mtcnn.pnet_output_size(level_h), mtcnn.pnet_output_size(level_w)
    probs, offsets = np.asarray(probs)[0, :out_h, :out_w], np.asarray(offsets)[0, :out_h, :out_w]
    rows, cols = np.nonzero(probs >= config.thresholds[0])
    if not rows.size:
      continue
    cells = np.stack([cols, rows], 1).astype(np.float32)
    scale32 = np.float32(scale)
    boxes = np.concatenate([np.floor((mtcnn.PNET_STRIDE * cells + 1) / scale32),
                            np.floor((mtcnn.PNET_STRIDE * cells + mtcnn.PNET_CELL) / scale32)], 1)
    scores = probs[rows, cols]
    keep = nms(boxes, scores, 0.5)
    found.append((boxes[keep], scores[keep], offsets[rows, cols][keep]))
  if not found:
    return np.zeros((0, 4), np.float32)
  boxes, scores, offsets = (np.concatenate(parts) for parts in zip(*found))
  keep = nms(boxes, scores, 0.7)
  return square(regress(boxes[keep], offsets[keep], inclusive=False))


def _refine(integral: np.ndarray, boxes: np.ndarray, config: DetectorConfig) -> np.ndarray:
  """Stage 2: R-Net on 24x24 crops -> the boxes it keeps, moved and made square [K, 4]."""
  patches, kept = crop_patches(integral, boxes, mtcnn.RNET_SIZE)
  if not kept.size:
    return boxes[:0]
  probs, offsets = _run_padded(_networks()[1], patches)
  passed = probs > config.thresholds[1]
  boxes, probs, offsets = boxes[kept][passed], probs[passed], offsets[passed]
  keep = nms(boxes, probs, 0.7)
  return square(regress(boxes[keep], offsets[keep]))


def _output(integral: np.ndarray, boxes: np.ndarray, config: DetectorConfig) -> Faces:
  """Stage 3: O-Net on 48x48 crops -> the final boxes, probabilities and landmarks."""
  patches, kept = crop_patches(integral, boxes, mtcnn.ONET_SIZE)
  if not kept.size:
    return _no_faces()
  probs, offsets, points = _run_padded(_networks()[2], patches)
  passed = probs > config.thresholds[2]
  boxes, probs, offsets, points = boxes[kept][passed], probs[passed], offsets[passed], points[passed]
  sizes = boxes[:, 2:4] - boxes[:, 0:2] + 1
  landmarks = np.stack([points[:, :5], points[:, 5:]], -1) * sizes[:, None, :] + boxes[:, None, 0:2] - 1
  boxes = regress(boxes, offsets)
  keep = nms(boxes, probs, 0.7, overlap='min')
  order = keep[np.argsort(-probs[keep], kind='stable')]
  return Faces(boxes[order].astype(np.float32), probs[order].astype(np.float32), landmarks[order].astype(np.float32))


def _no_faces() -> Faces:
  return Faces(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


def check_image(image) -> np.ndarray:
  """uint8 RGB [H, W, 3] (any array) -> float32 pixels; raises ValueError naming the problem otherwise."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'expected one RGB image [H, W, 3], got shape {image.shape}')
  if image.dtype != np.uint8:
    raise ValueError(f'expected uint8 pixels, got {image.dtype}')
  return image.astype(np.float32)


def detect(image, config: DetectorConfig = DetectorConfig()) -> Faces:
  """The faces in one uint8 RGB image [H, W, 3], most probable first (`Faces`)."""
  pixels = check_image(image)
  pad = int(round(config.edge_padding * max(pixels.shape[:2])))
  if pad:
    pixels = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)))
  integral = integral_image(pixels)
  boxes = _proposals(integral, config)
  if len(boxes):
    boxes = _refine(integral, boxes, config)
  faces = _output(integral, boxes, config) if len(boxes) else _no_faces()
  if pad:
    faces = Faces(faces.boxes - pad, faces.probs, faces.landmarks - pad)
  return faces


def detect_batch(images: Sequence, config: DetectorConfig = DetectorConfig()) -> list[Faces]:
  """`detect` on each image of a sequence (sizes may differ; compiled shapes are shared through the buckets)."""
  return [detect(image, config) for image in images]
