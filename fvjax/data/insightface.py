"""insightface data formats, read (and written, for tests and conversion) without mxnet.

`.bin` verification sets (LFW, CFP-FP, AgeDB-30, ...): a pickle of
(list of encoded images, list of bool issame); images 2i and 2i+1 form pair i.

`.rec/.idx` training sets (MS1MV2, ...): MXNet RecordIO. Each record is
  uint32 magic 0xced7230a, uint32 (cflag << 29 | length), payload, zero padding
  to 4 bytes; the payload is an IRHeader `<IfQQ` (flag, label, id, id2) followed
  by the encoded image (when flag > 0, `flag` float labels precede the image
  and label[0] is the identity). Record 0 of insightface sets is a header
  whose label holds (first image index, end index). The `.idx` file lists
  "key<TAB>byte offset" per record.
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


def pack_record(label: float, image: bytes, record_id: int = 0, label_pair: tuple[float, float] | None = None) -> bytes:
  """One RecordIO payload: IRHeader + image. `label_pair` stores 2 float labels (header record form)."""
  if label_pair is None:
    return _IRHEADER.pack(0, label, record_id, 0) + image
  return _IRHEADER.pack(2, 0.0, record_id, 0) + np.asarray(label_pair, np.float32).tobytes() + image


def write_recordio(rec_path: str | os.PathLike, idx_path: str | os.PathLike, payloads: list[bytes]) -> None:
  """Writes payloads as an MXNet indexed RecordIO pair (.rec + .idx, keys 0..n-1)."""
  with Path(rec_path).open('wb') as rec, Path(idx_path).open('w') as idx:
    for key, payload in enumerate(payloads):
      idx.write(f'{key}\t{rec.tell()}\n')
      rec.write(struct.pack('<II', RECORDIO_MAGIC, len(payload)))
      rec.write(payload + b'\x00' * (-len(payload) % 4))


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
    header = self._header(0)
    if header[0] > 0:  # insightface header record: label = (first image key, end key)
      first, end = (int(v) for v in np.frombuffer(self._payload(0)[_IRHEADER.size:_IRHEADER.size + 8], np.float32))
      self._keys = list(range(first, end))
    else:
      self._keys = sorted(offsets)
    self.labels = np.asarray([self._label(k) for k in self._keys], dtype=np.int32)

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

  def _label(self, key: int) -> int:
    flag, label, _, _ = self._header(key)
    if flag > 0:
      payload = self._payload(key)
      label = np.frombuffer(payload[_IRHEADER.size:_IRHEADER.size + 4], np.float32)[0]
    return int(label)


def load_recordio(rec_path: str | os.PathLike) -> FaceDataset:
  """Opens an insightface `.rec` (with its `.idx` beside it) as a `FaceDataset`."""
  source = RecordIODataset(rec_path)
  return FaceDataset(source=source, labels=source.labels, names=[str(i) for i in range(int(source.labels.max()) + 1)])
