"""Operating points: a decision threshold chosen for a target false-accept rate (NumPy only).

A personalised verifier's logit has its own scale per user, so logit 0 is no
decision rule (the README's enrolled user was rejected on all their photos at
0). `threshold_at_far` picks, from impostor scores (faces of people the model
was not trained on), the lowest threshold whose false-accept rate on them is at
most the target. Accept when score >= threshold.

With N impostor scores a FAR below 1/N cannot be resolved: the threshold then
lies just above the highest impostor score and `far_achieved` is 0, which says
only "fewer than 1 in N".
"""

import dataclasses
import os
from pathlib import Path

import numpy as np

CALIBRATION_FILE = 'calibration.npz'


@dataclasses.dataclass(frozen=True)
class Calibration:
  """A threshold and how it was chosen."""
  threshold: float  # accept when score >= threshold
  far: float  # the target false-accept rate
  far_achieved: float  # the fraction of the calibration impostors at or above the threshold
  impostors: int  # impostor scores it was chosen on
  identities: int  # distinct people among them

  def describe(self) -> str:
    resolution = '' if self.far * self.impostors >= 1 else f'; FAR {self.far:g} is below 1/{self.impostors}'
    return (f'threshold {self.threshold:+.3f}, calibrated for FAR {self.far:g} on {self.impostors:,} impostor images '
            f'of {self.identities} people (achieved {self.far_achieved:.4f}{resolution})')


def threshold_at_far(impostor_scores: np.ndarray, far: float, identities: int) -> Calibration:
  """The lowest threshold t with mean(impostor_scores >= t) <= far.

  impostor_scores [N] finite; far in (0, 1); identities: how many people the impostors are.
  """
  scores = np.sort(np.asarray(impostor_scores, np.float64).ravel())[::-1]
  if not scores.size:
    raise ValueError('calibration needs impostor scores; none were given')
  if not np.isfinite(scores).all():
    raise ValueError(f'{int((~np.isfinite(scores)).sum())} impostor scores are not finite')
  if not 0.0 < far < 1.0:
    raise ValueError(f'far must lie in (0, 1), got {far}')
  allowed = min(int(np.floor(far * len(scores) + 1e-9)), len(scores) - 1)  # false accepts the target permits
  threshold = float(np.nextafter(scores[allowed], np.inf))  # rejects the (allowed + 1)-th highest impostor
  achieved = float(np.mean(scores >= threshold))
  return Calibration(threshold, float(far), achieved, int(len(scores)), int(identities))


def per_user(impostor_scores: np.ndarray, far: float, identities: int) -> list[Calibration]:
  """`threshold_at_far` of each row of impostor_scores [U, N]: one user's scores on the calibration faces."""
  return [threshold_at_far(row, far, identities) for row in np.asarray(impostor_scores)]


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
  """Faces of people held out from a hypernetwork's training, kept with its run to calibrate enrolments.

  inputs: uint8 [N, s, s, 3] f's inputs before normalisation; embeddings: float32 [N, E] unit rows of the
  backbone; labels: int [N] identities.
  """
  inputs: np.ndarray
  embeddings: np.ndarray
  labels: np.ndarray

  @property
  def identities(self) -> int:
    return int(len(np.unique(self.labels)))

  def save(self, workdir: str | os.PathLike) -> None:
    path = Path(workdir) / CALIBRATION_FILE
    partial = path.with_suffix('.partial.npz')
    np.savez(partial, inputs=self.inputs, embeddings=self.embeddings, labels=self.labels)
    os.replace(partial, path)

  @classmethod
  def load(cls, workdir: str | os.PathLike) -> 'CalibrationSet | None':
    """The run's calibration set, or None for a run that kept none (calibration_fraction = 0, or older runs)."""
    path = Path(workdir) / CALIBRATION_FILE
    if not path.is_file():
      return None
    with np.load(path, allow_pickle=False) as z:
      return cls(z['inputs'], z['embeddings'], z['labels'])
