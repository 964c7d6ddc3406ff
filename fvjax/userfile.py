"""One enrolled user's verifier as a small file (`.fvjax`): theta + metadata, readable without JAX.

Layout: a NumPy `.npz` with
  theta    float32 [num_params]  the generated weights of f
  meta     JSON (uint8 bytes)    format, format_version, verifier spec, name, source images,
                                 threshold (logit), how it was calibrated, sha256 of theta
About 95 KB for the default 23,617-parameter verifier (float32, uncompressed).
This module imports only NumPy, so an edge device can load and run a user.
"""

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from fvjax.calibration import Calibration

FORMAT = 'fvjax-user'
FORMAT_VERSION = 2  # 2 added `calibration`; version 1 files still load (uncalibrated)
READABLE_VERSIONS = (1, 2)


class UserFileError(ValueError):
  """A user file that is missing, corrupted, or from another format version; the message names the file."""


@dataclasses.dataclass(frozen=True)
class User:
  theta: np.ndarray
  spec: dict  # VerifierSpec fields
  name: str
  threshold: float = 0.0  # accept a probe when f's logit >= threshold
  sources: tuple[str, ...] = ()
  calibration: dict | None = None  # `fvjax.calibration.Calibration` fields; None: threshold not calibrated

  def describe_threshold(self) -> str:
    if self.calibration is None:
      return f'threshold {self.threshold:+.3f} (not calibrated)'
    return Calibration(**self.calibration).describe()


def save(path: str | os.PathLike, user: User) -> None:
  theta = np.asarray(user.theta, np.float32)
  meta = {'format': FORMAT, 'format_version': FORMAT_VERSION, 'spec': user.spec, 'name': user.name,
          'threshold': float(user.threshold), 'sources': list(user.sources), 'calibration': user.calibration,
          'theta_sha256': hashlib.sha256(theta.tobytes()).hexdigest()}
  with Path(path).open('wb') as f:
    np.savez(f, theta=theta, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))


def load(path: str | os.PathLike) -> User:
  path = Path(path)
  if path.is_dir():
    raise UserFileError(f'{path} is a directory, not a user file')
  if not path.is_file():
    raise UserFileError(f'user file {path} does not exist')
  if not zipfile.is_zipfile(path):  # np.load would read other bytes as a pickle and suggest allow_pickle
    raise UserFileError(f'{path} is not an fvjax user file')
  try:
    with np.load(path, allow_pickle=False) as z:
      theta, meta = z['theta'], json.loads(z['meta'].tobytes().decode())
  except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
    raise UserFileError(f'{path} is not a readable fvjax user file ({e})') from e
  if meta.get('format') != FORMAT or meta.get('format_version') not in READABLE_VERSIONS:
    raise UserFileError(f'{path} has format {meta.get("format")!r} version {meta.get("format_version")!r}; '
                        f'this fvjax reads {FORMAT!r} versions {READABLE_VERSIONS}')
  if hashlib.sha256(np.asarray(theta, np.float32).tobytes()).hexdigest() != meta.get('theta_sha256'):
    raise UserFileError(f'{path}: weights do not match their checksum (file corrupted)')
  return User(theta=theta, spec=meta['spec'], name=meta['name'], threshold=meta['threshold'],
              sources=tuple(meta['sources']), calibration=meta.get('calibration'))
