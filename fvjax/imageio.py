"""Decoding face images on the host: bytes -> uint8 [112, 112, 3] -> normalised float.

NumPy and PIL only (no JAX), so edge tools (`fvjax verify`) can use it.
"""

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

FACE_SIZE = 112


class ImageDecodeError(ValueError):
  """An image file that cannot be decoded; the message names the file."""


def decode_image(data: bytes, source: str = '<bytes>') -> np.ndarray:
  """Decodes any image PIL reads into uint8 [H, W, 3] RGB (grayscale replicated to 3 channels).

  Raises:
    ImageDecodeError: naming `source` when the bytes are not a readable image.
  """
  try:
    with Image.open(io.BytesIO(data)) as img:
      img = img.convert('RGB')
      img.load()
  except UnidentifiedImageError as e:  # PIL's message names only its in-memory buffer
    raise ImageDecodeError(f'cannot decode image {source}: not an image format PIL reads') from e
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageDecodeError(f'cannot decode image {source}: {e}') from e
  return np.asarray(img, dtype=np.uint8)


def decode_face(data: bytes, source: str = '<bytes>', size: int = FACE_SIZE) -> np.ndarray:
  """Decodes any image PIL reads into uint8 [size, size, 3] RGB.

  Grayscale is replicated to 3 channels. Images that are not size x size are
  scaled (aspect kept) so the longer side is `size`, then zero-padded
  symmetrically; insightface-aligned 112x112 crops pass through untouched.

  Raises:
    ImageDecodeError: naming `source` when the bytes are not a readable image.
  """
  image = decode_image(data, source)
  return image if image.shape[:2] == (size, size) else fit_and_pad(image, size)


def fit_and_pad(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] scaled (aspect kept, bilinear) so its longer side is `size`, centred on black [size, size, 3]."""
  img = Image.fromarray(image)
  scale = size / max(img.size)
  new_w, new_h = max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))
  canvas = Image.new('RGB', (size, size))
  canvas.paste(img.resize((new_w, new_h), Image.BILINEAR), ((size - new_w) // 2, (size - new_h) // 2))
  return np.asarray(canvas, dtype=np.uint8)


def normalize(images: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] -> float32 in [-1, 1]: (x / 255 - 0.5) / 0.5, as the reference code."""
  return (images.astype(np.float32) / 255.0 - 0.5) / 0.5


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [size, size, 3] (PIL bilinear, antialiased when shrinking)."""
  if image.shape[0] == size and image.shape[1] == size:
    return image
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype=np.uint8)
