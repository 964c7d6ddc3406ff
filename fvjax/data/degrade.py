"""Image degradations of controlled strength: how faces look in unconstrained templates (IJB-style), on purpose.

Each takes and returns a uint8 face [112, 112, 3]. `DEGRADATIONS` are the graded levels of the norm-quality study
(`fvjax.eval.quality`); `MIXED_DEGRADATIONS` the strong levels of mixed-quality templates and the learned quality
head (`fvjax.train.features.degraded_features`); `fvjax.data.pipeline` uses `low_resolution` as AdaFace's rescaling
augmentation.
"""

import dataclasses
import io
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter


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
