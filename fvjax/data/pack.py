"""`fvjax pack`: an identity folder -> an insightface `.rec/.idx` training set, resumably.

The output is insightface's own layout (see `fvjax.data.insightface`), so a
packed set streams exactly like MS1MV2 (random access by key with `pread`, from
decoding threads) and other tools that read insightface sets read it too.
112x112 images that need no alignment are stored with their original bytes;
raw photos are aligned (`fvjax.align.read_face`) and stored as JPEG (quality 95,
as insightface's packing tools do).

Files that cannot be decoded, photos without a face, and exact duplicates
(the same bytes as an earlier file) are skipped and listed by name in the
returned report. Progress is journalled every `checkpoint_every` files: a run
that is interrupted resumes where the journal stops and writes the same bytes
as one that was not.
"""

import dataclasses
import hashlib
import io
import json
import os
import struct
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from fvjax import align, imageio
from fvjax.data import insightface
from fvjax.data.folder import scan_identity_folder

_HEADER_BYTES = len(insightface.framed(insightface.record_payload((0.0, 0.0), b'', 0)))  # rewritten at the end


@dataclasses.dataclass
class PackReport:
  """What `pack` wrote and what it left out, by file name."""
  images: int = 0
  identities: int = 0
  skipped: list[str] = dataclasses.field(default_factory=list)  # 'path: reason'
  duplicates: list[str] = dataclasses.field(default_factory=list)  # 'path = earlier path'


@dataclasses.dataclass
class _Journal:
  """How far a pack got; small, so rewriting it at every checkpoint stays cheap at MS1MV2 scale (the kept files'
  digests go to an append-only log beside it instead)."""
  folder: str = ''  # fingerprint of the folder's file list: a resume into a changed folder is refused
  files_done: int = 0
  rec_bytes: int = _HEADER_BYTES
  digest_bytes: int = 0  # valid length of the digest log
  identity_ranges: list[list[int]] = dataclasses.field(default_factory=list)  # [first key, end key] per identity
  report: PackReport = dataclasses.field(default_factory=PackReport)
  last_label: int = -1  # the folder label of the last image kept


def _fingerprint(items: list[tuple[Path, int]]) -> str:
  digest = hashlib.sha256()
  for path, label in items:
    digest.update(f'{path}|{label}|{path.stat().st_size}\n'.encode())
  return digest.hexdigest()


def _encoded_face(raw: bytes, path: Path, align_mode: str) -> bytes:
  """The bytes to store for one image file: the original for a 112x112 crop, else its aligned crop as JPEG."""
  image = imageio.decode_image(raw, source=str(path))
  if image.shape[:2] == (112, 112) and align_mode != 'always':
    return raw
  face = imageio.fit_and_pad(image, 112) if align_mode == 'never' else align.align_photo(image, source=str(path))
  buffer = io.BytesIO()
  Image.fromarray(face).save(buffer, 'JPEG', quality=95)
  return buffer.getvalue()


def _record(labels, image: bytes, key: int) -> bytes:
  return insightface.framed(insightface.record_payload(labels, image, key))


def pack(folder: str | os.PathLike, rec_path: str | os.PathLike, align_mode: str = 'auto',
         checkpoint_every: int = 2000, progress: bool = True, stop_after: int | None = None) -> PackReport:
  """Packs `folder` (root/<identity>/<image>) into `rec_path` (+ `.idx`); returns what was kept and skipped.

  stop_after: process at most this many more files, then stop with the journal written (for tests of resuming).
  """
  folder, rec_path = Path(folder), Path(rec_path)
  if not rec_path.parent.is_dir():
    raise FileNotFoundError(2, 'the folder to write into does not exist', str(rec_path.parent))
  _, items = scan_identity_folder(folder)
  partial, journal_path = rec_path.with_suffix('.rec.partial'), rec_path.with_suffix('.pack.json')
  digest_path = rec_path.with_suffix('.pack.digests')
  journal = _Journal(folder=_fingerprint(items))
  if journal_path.is_file() and partial.is_file() and digest_path.is_file():
    saved = json.loads(journal_path.read_text())
    if saved['folder'] != journal.folder:
      raise ValueError(f'{journal_path} records a pack of a different file list than {folder} holds now; delete '
                       f'{journal_path.name} and {partial.name} to start again')
    journal = _Journal(**{**saved, 'report': PackReport(**saved['report'])})
  first_seen = {}  # sha256 of a kept file -> its path
  with open(digest_path, 'r+' if journal.files_done else 'w+') as digests:
    digests.truncate(journal.digest_bytes)
    first_seen.update(line.split('\t', 1) for line in digests.read().splitlines())
    with open(partial, 'r+b' if journal.files_done else 'wb') as rec:
      rec.truncate(journal.rec_bytes)  # a fresh file: zeros where the header goes (written last, with the counts)
      rec.seek(journal.rec_bytes)
      end = len(items) if stop_after is None else min(len(items), journal.files_done + stop_after)
      bar = tqdm(total=len(items), initial=journal.files_done, desc=f'pack {folder.name}', disable=not progress)
      for i in range(journal.files_done, end):
        path, label = items[i]
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest in first_seen:
          journal.report.duplicates.append(f'{path} = {first_seen[digest]}')
        else:
          try:
            image = _encoded_face(raw, path, align_mode)
          except (imageio.ImageDecodeError, align.FaceNotFoundError) as e:
            journal.report.skipped.append(f'{path}: {e}')
          else:
            key = 1 + journal.report.images
            if label != journal.last_label:  # the folder's next identity with a usable image
              journal.identity_ranges.append([key, key])
              journal.last_label = label
            rec.write(_record(float(len(journal.identity_ranges) - 1), image, key))
            journal.identity_ranges[-1][1] = key + 1
            first_seen[digest] = str(path)
            digests.write(f'{digest}\t{path}\n')
            journal.report.images += 1
        journal.files_done = i + 1
        bar.update()
        if journal.files_done % checkpoint_every == 0 or journal.files_done == end:
          rec.flush()
          digests.flush()
          journal.rec_bytes, journal.digest_bytes = rec.tell(), digests.tell()
          _write_journal(journal_path, journal)
      bar.close()
      if journal.files_done < len(items):
        return journal.report
      n, k = journal.report.images, len(journal.identity_ranges)
      if not n:
        raise ValueError(f'no usable image in {folder}: ' + '; '.join(journal.report.skipped[:5]))
      for j, (first, stop) in enumerate(journal.identity_ranges):
        rec.write(_record((float(first), float(stop)), b'', n + 1 + j))
      rec.seek(0)
      rec.write(_record((float(n + 1), float(n + 1 + k)), b'', 0))
  _write_index(partial, rec_path.with_suffix('.idx'))
  os.replace(partial, rec_path)
  journal_path.unlink()
  digest_path.unlink()
  journal.report.identities = k
  return journal.report


def _write_journal(path: Path, journal: _Journal) -> None:
  partial = path.with_suffix('.partial')
  partial.write_text(json.dumps(dataclasses.asdict(journal)))
  os.replace(partial, path)


def _write_index(rec_path: Path, idx_path: Path) -> None:
  """The `.idx` of a RecordIO file: 'key<TAB>offset' of each record, walked from the file itself."""
  lines, offset, size = [], 0, rec_path.stat().st_size
  with open(rec_path, 'rb') as rec:
    while offset < size:
      rec.seek(offset)
      _, length_word = struct.unpack('<II', rec.read(8))
      lines.append(f'{len(lines)}\t{offset}\n')
      length = length_word & ((1 << 29) - 1)
      offset += 8 + length + (-length % 4)
  idx_path.write_text(''.join(lines))
