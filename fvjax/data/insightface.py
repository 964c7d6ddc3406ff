"""insightface data formats, read (and written, for tests and conversion) without mxnet.

`.bin` verification sets (LFW, CFP-FP, AgeDB-30, ...): a pickle of
(list of encoded images, list of bool issame); images 2i and 2i+1 form pair i.

`.rec/.idx` training sets (MS1MV2, ...): MXNet RecordIO. Each record is
  uint32 magic 0xced7230a, uint32 (cflag << 29 | length), payload, zero padding
  to 4 bytes; the payload is an IRHeader `<IfQQ` (flag, label, id, id2) followed
  by the encoded image (when flag > 0, `flag` float labels precede the image
  and label[0] is the identity). insightface's sets (MS1MV2, ...) start with a
  header record at key 0 whose labels are (N + 1, N + 1 + K): the images are
  keys 1..N, and keys N+1..N+K are one record per identity whose labels are
  (its first image key, its end key), as the reference readers use them
  (`range(1, int(header.label[0]))`). A file without that header (flag 0 at
  key 0) holds images only. The `.idx` file lists "key<TAB>byte offset".
"""

import os
import pickle
import struct
from pathlib import Path

import numpy as np

from fvjax.data.folder import DatasetError, FaceDataset

RECORDIO_MAGIC = 0xCED7230A
_IRHEADER = struct.Struct('<IfQQ')


def read_bin(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
  """Reads an insightface `.bin` verification set -> (encoded images [2P], issame bool [P])."""
  path = Path(path)
  if not path.is_file():
    raise DatasetError(f'verification set {path} does not exist')
  try:
    with path.open('rb') as f:
      images, issame = pickle.load(f, encoding='bytes')
  except Exception as e:  # pickle raises many types on corrupt input
    raise DatasetError(f'{path} is not an insightface .bin verification set: {e}') from e
  images = [bytes(b) for b in images]
  issame = np.asarray(issame, dtype=bool)
  if len(images) != 2 * len(issame):
    raise DatasetError(f'{path}: {len(images)} images for {len(issame)} pairs (expected 2 per pair)')
  return images, issame


def write_bin(path: str | os.PathLike, images: list[bytes], issame: list[bool]) -> None:
  """Writes an insightface `.bin` verification set."""
  with Path(path).open('wb') as f:
    pickle.dump((list(images), list(map(bool, issame))), f, protocol=4)


def record_payload(flag_labels: tuple[float, ...] | float, image: bytes, record_id: int) -> bytes:
  """One RecordIO payload as `mx.recordio.pack` writes it: a float label in the IRHeader (flag 0), or flag = n and n
  float32 labels after it."""
  if isinstance(flag_labels, tuple):
    return _IRHEADER.pack(len(flag_labels), 0.0, record_id, 0) + np.asarray(flag_labels, np.float32).tobytes() + image
  return _IRHEADER.pack(0, float(flag_labels), record_id, 0) + image


def write_recordio(rec_path: str | os.PathLike, images: list[bytes], labels: list[int]) -> None:
  """Writes a training set in insightface's layout (`.rec` and the `.idx` beside it).

  Key 0: header, labels (N + 1, N + 1 + K); keys 1..N: the images grouped by identity (labels 0..K-1, in order);
  keys N+1..N+K: one record per identity, labels (its first image key, its end key).
  """
  labels = np.asarray(labels)
  if len(images) != len(labels) or not len(images):
    raise ValueError(f'{len(images)} images for {len(labels)} labels; a training set needs at least one image')
  if (np.diff(labels) < 0).any() or labels[0] != 0 or (np.diff(labels) > 1).any():
    raise ValueError('labels must run 0..K-1 in order (images grouped by identity)')
  n, k = len(images), int(labels[-1]) + 1
  starts = np.searchsorted(labels, np.arange(k + 1)) + 1  # image key of each identity's first image, then N + 1
  records = [record_payload((float(n + 1), float(n + 1 + k)), b'', 0)]
  records += [record_payload(float(label), image, key) for key, (label, image) in enumerate(zip(labels, images), 1)]
  records += [record_payload((float(starts[i]), float(starts[i + 1])), b'', n + 1 + i) for i in range(k)]
  rec_path = Path(rec_path)
  with rec_path.open('wb') as rec, rec_path.with_suffix('.idx').open('w') as idx:
    for key, payload in enumerate(records):
      idx.write(f'{key}\t{rec.tell()}\n')
      rec.write(framed(payload))


def framed(payload: bytes) -> bytes:
  """A payload as one RecordIO record: magic, length, payload, zero padding to 4 bytes."""
  return struct.pack('<II', RECORDIO_MAGIC, len(payload)) + payload + b'\x00' * (-len(payload) % 4)


class RecordIODataset:
  """Random-access reader of an insightface `.rec/.idx` training set.

  dataset[i] -> {'image': encoded bytes, 'label': int} for the i-th image
  record (the header record is skipped); `labels` is int [N].
  """

  def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
    self.rec_path = Path(rec_path)
    idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix('.idx')
    for p in (self.rec_path, idx_path):
      if not p.is_file():
        raise DatasetError(f'RecordIO file {p} does not exist')
    offsets = {}
    for line_no, line in enumerate(idx_path.read_text().splitlines(), 1):
      try:
        key, offset = line.split('\t')
        offsets[int(key)] = int(offset)
      except ValueError as e:
        raise DatasetError(f'{idx_path}:{line_no}: malformed index line {line!r}') from e
    self._fd = os.open(self.rec_path, os.O_RDONLY)  # read with pread: safe from decoding threads
    self._offsets = offsets
    if self._header(0)[0] > 0:  # insightface's header record: labels (first identity record key, end key)
      self._keys = self._image_keys_from_header()
    else:  # no header: every record is an image
      self._keys = sorted(offsets)
    self.labels = np.asarray([self._label(k) for k in self._keys], dtype=np.int32)

  def _image_keys_from_header(self) -> list[int]:
    """Keys 1..N, checked against the header's identity records N+1..N+K and the index."""
    first, end = (int(v) for v in self._float_labels(0)[:2])
    if not 1 <= first <= end or set(self._offsets) != set(range(end)):
      raise DatasetError(f'{self.rec_path}: header record says images are keys 1..{first - 1} and identity records '
                         f'{first}..{end - 1}, but the index holds {len(self._offsets)} keys from '
                         f'{min(self._offsets)} to {max(self._offsets)}')
    covered = 1
    for key in range(first, end):  # each identity record: (first image key, end key), tiling 1..N
      start, stop = (int(v) for v in self._float_labels(key)[:2])
      if start != covered or stop < start:
        raise DatasetError(f'{self.rec_path}: identity record {key} covers images {start}..{stop - 1}; expected '
                           f'a range starting at {covered}')
      covered = stop
    if first < end and covered != first:
      raise DatasetError(f'{self.rec_path}: identity records cover images 1..{covered - 1} of 1..{first - 1}')
    return list(range(1, first))

  def __len__(self) -> int:
    return len(self._keys)

  def __getitem__(self, index: int) -> dict:
    key = self._keys[index]
    payload = self._payload(key)
    flag = _IRHEADER.unpack_from(payload)[0]
    return {'image': payload[_IRHEADER.size + 4 * flag:], 'label': int(self.labels[index])}

  def _payload(self, key: int) -> bytes:
    if key not in self._offsets:
      raise DatasetError(f'{self.rec_path}: record {key} is not in the index')
    offset = self._offsets[key]
    head = os.pread(self._fd, 8, offset)
    if len(head) < 8:
      raise DatasetError(f'{self.rec_path}: record {key} at byte {self._offsets[key]} is truncated')
    magic, length_word = struct.unpack('<II', head)
    if magic != RECORDIO_MAGIC:
      raise DatasetError(f'{self.rec_path}: bad RecordIO magic {magic:#x} at record {key}')
    length = length_word & ((1 << 29) - 1)
    payload = os.pread(self._fd, length, offset + 8)
    if len(payload) < length:
      raise DatasetError(f'{self.rec_path}: record {key} is truncated ({len(payload)} of {length} bytes)')
    return payload

  def __del__(self):
    if hasattr(self, '_fd'):
      os.close(self._fd)

  def _header(self, key: int) -> tuple:
    return _IRHEADER.unpack_from(self._payload(key))

  def _float_labels(self, key: int) -> np.ndarray:
    """The record's label vector (flag > 0: `flag` float32 values after the IRHeader)."""
    flag = self._header(key)[0]
    return np.frombuffer(self._payload(key)[_IRHEADER.size:_IRHEADER.size + 4 * flag], np.float32)

  def _label(self, key: int) -> int:
    flag, label, _, _ = self._header(key)
    return int(self._float_labels(key)[0] if flag > 0 else label)


def load_recordio(rec_path: str | os.PathLike) -> FaceDataset:
  """Opens an insightface `.rec` (with its `.idx` beside it) as a `FaceDataset`."""
  source = RecordIODataset(rec_path)
  return FaceDataset(source=source, labels=source.labels, names=[str(i) for i in range(int(source.labels.max()) + 1)])
