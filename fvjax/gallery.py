"""A gallery of enrolled users: a directory of `.fvjax` user files, grown by enrolment, never by retraining.

Each user is one file, `<name>.fvjax`, written to a temporary name and linked
into place, which fails if the name is taken: two processes adding people at
once lose nothing and never overwrite each other (`replace=True` overwrites on
purpose, atomically). `identify` scores probes against every user in one
batched, jitted pass (`fvjax.eval.personalized.score_matrix`: tiles of users x
probes, users sharded over the devices) and decides with each user's own
calibrated threshold.
"""

import dataclasses
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from fvjax import edge, userfile
from fvjax.eval import personalized

SUFFIX = '.fvjax'


class GalleryError(ValueError):
  """A gallery that cannot be used as asked; the message names the files."""


@dataclasses.dataclass(frozen=True)
class Match:
  """One candidate for a probe: the user, f's logit, its margin over the user's threshold, the decision."""
  name: str
  logit: float
  margin: float

  @property
  def accepted(self) -> bool:
    return self.margin >= 0.0


def file_name(name: str) -> str:
  """The file a user's name is stored under (letters, digits, '.', '_' and '-'; others become '_')."""
  stem = re.sub(r'[^A-Za-z0-9._-]', '_', name).strip('.')
  if not stem:
    raise GalleryError(f'user name {name!r} gives no usable file name')
  return stem + SUFFIX


class Gallery:
  """The user files in `path` (created on the first `add`)."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    if self.path.exists() and not self.path.is_dir():
      raise GalleryError(f'gallery {self.path} is a file; a gallery is a directory of {SUFFIX} user files')

  def files(self) -> list[Path]:
    """The user files; `add`'s temporary files (hidden, '.adding-*') are not users yet."""
    if not self.path.is_dir():
      return []
    return sorted(p for p in self.path.glob(f'*{SUFFIX}') if not p.name.startswith('.'))

  def add(self, user: userfile.User, replace: bool = False) -> Path:
    """Stores `user`; a name already in the gallery is an error unless `replace`."""
    self.path.mkdir(parents=True, exist_ok=True)
    target = self.path / file_name(user.name)
    fd, temporary = tempfile.mkstemp(prefix='.adding-', suffix=SUFFIX, dir=self.path)
    os.close(fd)
    try:
      userfile.save(temporary, user)
      if replace:
        os.replace(temporary, target)
      else:
        try:
          os.link(temporary, target)  # atomic, and refuses an existing name
        except FileExistsError:
          raise GalleryError(f'{target} already holds a user named {user.name!r}; remove it first or replace it')
    finally:
      if os.path.exists(temporary):
        os.unlink(temporary)
    return target

  def remove(self, name: str) -> None:
    target = self.path / file_name(name)
    if not target.is_file():
      raise GalleryError(f'no user {name!r} in gallery {self.path} (looked for {target.name})')
    target.unlink()

  def load(self, skip_bad: bool = False) -> tuple[list[userfile.User], list[str]]:
    """(users, problems): every readable user file; a bad file is an error naming it, or with `skip_bad` a line
    in `problems`. All users must share one verifier architecture."""
    users, problems = [], []
    for path in self.files():
      try:
        users.append(userfile.load(path))
      except userfile.UserFileError as e:
        problems.append(str(e))
    if problems and not skip_bad:
      raise GalleryError(f'{len(problems)} unreadable user file(s) in {self.path} (pass --skip-bad to leave them '
                         'out):\n  ' + '\n  '.join(problems))
    specs = {edge.VerifierSpec.from_dict(u.spec) for u in users}
    if len(specs) > 1:
      raise GalleryError(f'gallery {self.path} mixes {len(specs)} verifier architectures; one gallery takes the '
                         'users of one hypernetwork')
    return users, problems

  def identify(self, faces: np.ndarray, top_k: int = 5, skip_bad: bool = False,
               memory_budget_bytes: int = 2 << 30) -> tuple[list[list[Match]], list[str]]:
    """(per probe its top_k matches by margin, problems) for aligned uint8 faces [P, 112, 112, 3]."""
    users, problems = self.load(skip_bad)
    if not users:
      raise GalleryError(f'gallery {self.path} holds no users')
    spec = edge.VerifierSpec.from_dict(users[0].spec)
    thetas = np.stack([u.theta for u in users])
    thresholds = np.array([u.threshold for u in users])
    logits = personalized.score_matrix(thetas, edge.verifier_input(faces, spec), spec, memory_budget_bytes)  # [U, P]
    margins = logits - thresholds[:, None]
    order = np.argsort(-margins, axis=0, kind='stable')[:top_k]  # [k, P]
    matches = [[Match(users[u].name, float(logits[u, p]), float(margins[u, p])) for u in order[:, p]]
               for p in range(logits.shape[1])]
    return matches, problems
