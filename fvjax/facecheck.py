"""Is a 112x112 image an aligned face? The check run before an image taken as a crop is enrolled or verified.

An insightface-aligned crop has a face whose five landmarks sit on `align.INSIGHTFACE_TEMPLATE`. The check runs
MTCNN (`fvjax.detection`, shipped) on the crop, zero-padded as `fvjax.align` pads photos, and accepts the crop when a
detected face has its landmarks within `max_offset` pixels of the template (mean over the five points) and at the
template's scale (the least-squares similarity from template to landmarks scales by `SCALE_RANGE`: wide enough for
profile crops, whose far-side points MTCNN puts near the nose, measured down to 0.64). Noise, textures and other
photos give no face there; a face elsewhere in the image, or much smaller or larger than an aligned one, is not
where the crop says. Its false-reject rate on real aligned faces and its reject rate on
non-faces are measured by `experiments/face_check.py` (README, "Face check").
"""

import dataclasses

import numpy as np

from fvjax import align

MAX_OFFSET = 24.0  # pixels of the 112x112 crop; about two thirds of the template's eye distance (35 px)
SCALE_RANGE = (0.6, 1.4)  # aligned CelebA crops: 0.81-1.08; LFW 0.83-1.16; CFP profiles 0.64-1.0


class NotAFaceError(ValueError):
  """An image taken as an aligned crop that does not hold a face where the crop says; the message names it."""


@dataclasses.dataclass(frozen=True)
class FaceCheck:
  """What the check saw: `offset`, the mean distance (pixels) of the nearest face's landmarks from the template
  (inf when MTCNN finds no face), that face's `scale` against the template (nan when none) and its probability (0
  when none)."""
  offset: float
  scale: float
  probability: float
  max_offset: float = MAX_OFFSET

  @property
  def passed(self) -> bool:
    return self.offset <= self.max_offset and SCALE_RANGE[0] <= self.scale <= SCALE_RANGE[1]


def check_crop(crop: np.ndarray, max_offset: float = MAX_OFFSET) -> FaceCheck:
  """uint8 RGB [112, 112, 3] -> `FaceCheck` of its face (passed when one lies where the template puts it)."""
  from fvjax import detection  # JAX, imported when a check runs
  crop = np.asarray(crop)
  if crop.shape != (align.CROP_SIZE, align.CROP_SIZE, 3):
    raise ValueError(f'the face check takes a [{align.CROP_SIZE}, {align.CROP_SIZE}, 3] crop, got {crop.shape}')
  faces = detection.detect(crop, detection.DetectorConfig(edge_padding=align.EDGE_PADDING))  # MTCNN's thresholds
  if not len(faces.boxes):
    return FaceCheck(float('inf'), float('nan'), 0.0, max_offset)
  offsets = np.linalg.norm(faces.landmarks - align.INSIGHTFACE_TEMPLATE, axis=-1).mean(-1)
  nearest = int(np.argmin(offsets))
  template_to_face = align.similarity_transform(align.INSIGHTFACE_TEMPLATE, faces.landmarks[nearest])
  scale = float(np.hypot(*template_to_face[:, 0]))
  return FaceCheck(float(offsets[nearest]), scale, float(faces.probs[nearest]), max_offset)


def require_face(crop: np.ndarray, source: str = '<image>') -> np.ndarray:
  """The crop itself when `check_crop` passes; raises NotAFaceError naming `source` otherwise."""
  check = check_crop(crop)
  if not check.passed:
    if np.isinf(check.offset):
      where = 'no face found'
    elif check.offset > check.max_offset:
      where = (f'the nearest face is {check.offset:.0f} px from where an aligned face sits '
               f'(at most {check.max_offset:.0f})')
    else:
      low, high = SCALE_RANGE
      where = f'the face is {check.scale:.2f} times the size of an aligned face (allowed {low}-{high})'
    raise NotAFaceError(f'{source} does not look like an aligned face: {where}; pass --no-face-check to use it anyway')
  return crop
