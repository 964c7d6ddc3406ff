import io
import struct

import numpy as np
import pytest
from PIL import Image

from fvjax import data, imageio
from fvjax.cli import DEMO_DATA


def jpeg_bytes(value: int, size=(112, 112), mode='RGB') -> bytes:
  buf = io.BytesIO()
  Image.new(mode, size, color=value if mode == 'L' else (value, value // 2, 255 - value)).save(buf, 'JPEG')
  return buf.getvalue()


def make_folder(root, counts, size=(112, 112)):
  for i, n in enumerate(counts):
    d = root / f'id{i:02d}'
    d.mkdir(parents=True)
    for j in range(n):
      (d / f'{j}.jpg').write_bytes(jpeg_bytes(10 * i + j, size))
  return root


def test_decode_grayscale_is_replicated_and_padded_to_112():
  buf = io.BytesIO()
  img = np.full((112, 92), 200, np.uint8)
  Image.fromarray(img, 'L').save(buf, 'PNG')
  out = imageio.decode_face(buf.getvalue())
  assert out.shape == (112, 112, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, 10:102], 200)  # 92 wide, centred: 10 px of padding each side
  np.testing.assert_array_equal(out[:, :10], 0)
  np.testing.assert_array_equal(out[:, 102:], 0)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_normalize_range():
  np.testing.assert_allclose(imageio.normalize(np.array([0, 255], np.uint8)), [-1.0, 1.0])


def test_corrupt_image_error_names_the_file(tmp_path):
  root = make_folder(tmp_path / 'faces', [2, 2])
  bad = root / 'id01' / '1.jpg'
  bad.write_bytes(b'not an image at all')
  with pytest.raises(imageio.ImageDecodeError, match='id01/1.jpg'):
    data.load_identity_folder(root)


def test_missing_path_empty_identity_and_no_identities(tmp_path):
  with pytest.raises(data.DatasetError, match='does-not-exist'):
    data.load_identity_folder(tmp_path / 'does-not-exist')
  root = make_folder(tmp_path / 'faces', [2])
  (root / 'empty_person').mkdir()
  with pytest.raises(data.DatasetError, match='empty_person holds no images'):
    data.load_identity_folder(root)
  (tmp_path / 'flat').mkdir()
  (tmp_path / 'flat' / 'a.jpg').write_bytes(jpeg_bytes(1))
  with pytest.raises(data.DatasetError, match='no identity folders'):
    data.load_identity_folder(tmp_path / 'flat')


def test_identity_folder_roundtrip_through_tfds(tmp_path):
  root = make_folder(tmp_path / 'faces', [3, 2, 4])
  ds = data.load_identity_folder(root)
  assert ds.names == ['id00', 'id01', 'id02']
  np.testing.assert_array_equal(np.bincount(ds.labels), [3, 2, 4])
  for i in range(len(ds)):  # TFDS shuffles records when preparing: check each record is self-consistent
    record = ds.source[i]
    path = root / record['path'].decode()
    assert record['image'] == path.read_bytes()
    assert ds.names[ds.labels[i]] == path.parent.name
  # An edited folder is prepared anew (fingerprinted config), not served stale.
  (root / 'id01' / '2.jpg').write_bytes(jpeg_bytes(99))
  assert len(data.load_identity_folder(root)) == 10


def test_preparing_a_folder_says_one_line_and_leaves_no_empty_folders(tmp_path, capfd):
  """No "Downloading and preparing" on stdout, no absl BuilderConfig warning: one stderr line, the first time only."""
  root = make_folder(tmp_path / 'faces', [2, 2])
  cache = tmp_path / 'cache'
  data.load_identity_folder(root, cache_dir=cache)
  out, err = capfd.readouterr()
  assert out == '' and err.strip().splitlines() == [err.strip()] and err.startswith(f'preparing {root} (4 images')
  data.load_identity_folder(root, cache_dir=cache)
  assert capfd.readouterr() == ('', '')
  assert not [p for p in cache.rglob('*') if p.is_dir() and not any(p.iterdir())]


def test_split_identities_is_disjoint_and_complete():
  labels = np.repeat(np.arange(20), 3)
  train, test = data.split_identities(labels, 0.25, seed=0)
  assert len(np.unique(labels[test])) == 5
  assert not set(labels[train]) & set(labels[test])
  np.testing.assert_array_equal(np.sort(np.r_[train, test]), np.arange(60))
  with pytest.raises(ValueError):
    data.split_identities(labels, 0.0, seed=0)


def test_train_batches_are_step_indexed_deterministic_and_cover_each_epoch(tmp_path):
  root = make_folder(tmp_path / 'faces', [4, 4, 4])
  ds = data.load_identity_folder(root)
  batches, k = data.train_batches(ds, np.arange(12), batch_size=4, seed=3,
                                  augmentation=data.AugmentConfig(flip=0.5, crop_padding=2))
  assert k == 3
  first_epoch = np.concatenate([batches[s]['index'] for s in range(3)])
  np.testing.assert_array_equal(np.sort(first_epoch), np.arange(12))  # nothing skipped, nothing repeated
  second_epoch = np.concatenate([batches[s]['index'] for s in range(3, 6)])
  np.testing.assert_array_equal(np.sort(second_epoch), np.arange(12))
  assert not np.array_equal(first_epoch, second_epoch)  # reshuffled
  resumed = next(data.iterate(batches, start_step=4))
  np.testing.assert_array_equal(resumed['index'], batches[4]['index'])
  np.testing.assert_array_equal(resumed['image'], batches[4]['image'])
  b = batches[0]
  assert b['image'].shape == (4, 112, 112, 3) and b['image'].dtype == np.float32
  assert -1.0 <= b['image'].min() and b['image'].max() <= 1.0


def test_augment_flip_and_crop():
  img = np.arange(112 * 112 * 3, dtype=np.uint8).reshape(112, 112, 3)

  class Rng:  # deterministic stand-in: crop offset (2, 0), flip
    def integers(self, lo, hi, size):
      return np.array([2, 0])

    def random(self):
      return 0.0

  out = data.pipeline.augment(img, Rng(), data.AugmentConfig(flip=0.5, crop_padding=2))
  padded = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode='reflect')
  np.testing.assert_array_equal(out, padded[2:114, 0:112][:, ::-1])


def test_augment_colour_jitter():
  img = np.zeros((112, 112, 3), np.uint8)
  img[:, :56] = 100  # two levels: mean 150
  img[:, 56:] = 200

  class Rng:  # deterministic stand-in: no flip; contrast factor 1.5 (drawn first), then brightness factor 1.2
    def __init__(self):
      self.draws = iter([1.5, 1.2])

    def random(self):
      return 1.0

    def uniform(self, lo, hi):
      assert (lo, hi) == (0.5, 1.5) or (lo, hi) == pytest.approx((0.8, 1.2))
      return next(self.draws)

  out = data.pipeline.augment(img, Rng(), data.AugmentConfig(flip=0.5, contrast=0.5, brightness=0.2))
  # contrast: 150 + (100 - 150) * 1.5 = 75 and 150 + 50 * 1.5 = 225; brightness x1.2: 90 and 270 -> clipped to 255
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, :56], 90)
  np.testing.assert_array_equal(out[:, 56:], 255)

  class NoDraws:  # jitter off: no random number is drawn, so earlier configs' streams are unchanged
    def random(self):
      return 1.0

  np.testing.assert_array_equal(data.pipeline.augment(img, NoDraws(), data.AugmentConfig(flip=0.5)), img)


def test_insightface_bin_roundtrip(tmp_path):
  images = [jpeg_bytes(i) for i in range(6)]
  data.write_bin(tmp_path / 'lfw.bin', images, [True, False, True])
  read, issame = data.read_bin(tmp_path / 'lfw.bin')
  assert read == images
  np.testing.assert_array_equal(issame, [True, False, True])
  (tmp_path / 'bad.bin').write_bytes(b'garbage')
  with pytest.raises(data.DatasetError, match='bad.bin'):
    data.read_bin(tmp_path / 'bad.bin')


# An independent RecordIO writer and reader, from MXNet's documented format (recordio.pack: IRHeader '<IfQQ' =
# flag, label, id, id2; flag > 0 puts `flag` float32 labels after it) and insightface's layout as the reference repos
# read it (seesawfacenet_pytorch's load_mx_rec: header = record 0, images = range(1, int(header.label[0]))).

def mx_pack(label, image=b'', record_id=0):
  if isinstance(label, (tuple, list)):
    header = struct.pack('<IfQQ', len(label), 0.0, record_id, 0) + struct.pack(f'<{len(label)}f', *label)
  else:
    header = struct.pack('<IfQQ', 0, float(label), record_id, 0)
  return header + image


def mx_write(rec_path, records):
  with open(rec_path, 'wb') as rec, open(str(rec_path)[:-4] + '.idx', 'w') as idx:
    for key, payload in enumerate(records):
      idx.write(f'{key}\t{rec.tell()}\n')
      rec.write(struct.pack('<II', 0xCED7230A, len(payload)) + payload + b'\x00' * (-len(payload) % 4))


def mx_read(rec_path):
  """(images, labels) the way the reference code reads an insightface .rec."""
  raw = open(rec_path, 'rb').read()
  offsets = dict(map(int, line.split('\t')) for line in open(str(rec_path)[:-4] + '.idx').read().splitlines())
  def unpack(key):
    _, length = struct.unpack_from('<II', raw, offsets[key])
    payload = raw[offsets[key] + 8:offsets[key] + 8 + (length & ((1 << 29) - 1))]
    flag, label, _, _ = struct.unpack_from('<IfQQ', payload)
    labels = struct.unpack_from(f'<{flag}f', payload, 24) if flag else (label,)
    return labels, payload[24 + 4 * flag:]
  header, _ = unpack(0)
  records = [unpack(key) for key in range(1, int(header[0]))]
  return [image for _, image in records], [int(labels[0]) for labels, _ in records]


def insightface_records(images, labels):
  n, k = len(images), max(labels) + 1
  starts = [1 + labels.index(i) for i in range(k)] + [n + 1]
  return ([mx_pack((n + 1.0, n + 1.0 + k))] + [mx_pack(float(l), im, i + 1) for i, (l, im) in
                                                enumerate(zip(labels, images))]
          + [mx_pack((float(starts[i]), float(starts[i + 1])), b'', n + 1 + i) for i in range(k)])


def test_recordio_in_insightface_layout_loads_every_image_with_its_label(tmp_path):
  images, labels = [jpeg_bytes(i) for i in range(6)], [0, 0, 1, 2, 2, 2]
  mx_write(tmp_path / 'train.rec', insightface_records(images, labels))
  ds = data.load_faces(tmp_path / 'train.rec')
  assert len(ds) == 6 and len(ds.names) == 3
  np.testing.assert_array_equal(ds.labels, labels)
  assert [ds.source[i]['image'] for i in range(6)] == images
  np.testing.assert_array_equal(imageio.decode_face(ds.source[3]['image']), imageio.decode_face(images[3]))


def test_recordio_without_a_header_holds_images_only(tmp_path):
  images, labels = [jpeg_bytes(i) for i in range(3)], [4, 0, 4]
  mx_write(tmp_path / 'train.rec', [mx_pack(float(l), im, i) for i, (l, im) in enumerate(zip(labels, images))])
  ds = data.RecordIODataset(tmp_path / 'train.rec')
  np.testing.assert_array_equal(ds.labels, labels)
  assert [ds[i]['image'] for i in range(3)] == images


def test_recordio_header_that_disagrees_with_the_index_is_an_error(tmp_path):
  images, labels = [jpeg_bytes(i) for i in range(4)], [0, 0, 1, 1]
  records = insightface_records(images, labels)
  mx_write(tmp_path / 'short.rec', records[:-1])  # identity record 6 missing
  with pytest.raises(data.DatasetError, match='header record says images are keys 1..4 and identity records 5..6'):
    data.RecordIODataset(tmp_path / 'short.rec')
  records[5] = mx_pack((1.0, 2.0), b'', 5)  # identity 0 claims image 1 only: identity 1's range then starts at 3
  mx_write(tmp_path / 'gap.rec', records)
  with pytest.raises(data.DatasetError, match='identity record 6 covers images 3..4; expected a range starting at 2'):
    data.RecordIODataset(tmp_path / 'gap.rec')


def test_written_recordio_reads_back_with_the_reference_reader(tmp_path):
  images, labels = [jpeg_bytes(i) for i in range(5)], [0, 1, 1, 1, 2]
  data.write_recordio(tmp_path / 'train.rec', images, labels)
  assert mx_read(tmp_path / 'train.rec') == (images, labels)
  assert (tmp_path / 'train.rec').read_bytes() == b''.join(  # byte for byte what the independent writer makes
      struct.pack('<II', 0xCED7230A, len(p)) + p + b'\x00' * (-len(p) % 4) for p in insightface_records(images, labels))
  with pytest.raises(ValueError, match='grouped by identity'):
    data.write_recordio(tmp_path / 'bad.rec', images, [0, 2, 1, 1, 2])


def test_truncated_recordio_is_a_clear_error(tmp_path):
  data.write_recordio(tmp_path / 'train.rec', [jpeg_bytes(i) for i in range(3)], [0, 1, 2])
  raw = (tmp_path / 'train.rec').read_bytes()
  (tmp_path / 'train.rec').write_bytes(raw[:-150])
  with pytest.raises(data.DatasetError, match='is truncated'):
    data.RecordIODataset(tmp_path / 'train.rec')


def test_shipped_att_faces_load():
  ds = data.load_identity_folder(DEMO_DATA)
  assert len(ds) == 380 and len(ds.names) == 38
  img = imageio.decode_face(ds.source[0]['image'])
  assert img.shape == (112, 112, 3)


def test_real_celeba_faces_load(celeba_dir):
  ds = data.load_identity_folder(celeba_dir)
  assert len(ds.names) == 240 and len(ds) > 4000
  assert imageio.decode_face(ds.source[0]['image']).shape == (112, 112, 3)


def test_pack_round_trips_a_folder_resumably_and_names_what_it_skips(tmp_path):
  from fvjax.data import pack
  root = tmp_path / 'people'
  for person, values in {'ann': (10, 20, 30), 'bob': (40,), 'cat': (50, 60)}.items():
    (root / person).mkdir(parents=True)
    for v in values:
      (root / person / f'{v}.jpg').write_bytes(jpeg_bytes(v))
  (root / 'bob' / 'copy.jpg').write_bytes(jpeg_bytes(10))  # the same bytes as ann/10.jpg
  (root / 'bob' / 'broken.jpg').write_bytes(b'not an image')
  (root / 'dan').mkdir()
  (root / 'dan' / 'broken.png').write_bytes(b'\x89PNG nope')  # dan has no usable image: no label is spent on him

  whole = pack.pack(root, tmp_path / 'whole.rec', progress=False)
  assert (whole.images, whole.identities) == (6, 3)
  assert [line.split(':')[0] for line in whole.skipped] == [str(root / 'bob' / 'broken.jpg'),
                                                             str(root / 'dan' / 'broken.png')]
  assert whole.duplicates == [f"{root / 'bob' / 'copy.jpg'} = {root / 'ann' / '10.jpg'}"]
  images, labels = mx_read(tmp_path / 'whole.rec')  # the independent reader
  assert labels == [0, 0, 0, 1, 2, 2]
  assert images == [(root / p).read_bytes() for p in ('ann/10.jpg', 'ann/20.jpg', 'ann/30.jpg', 'bob/40.jpg',
                                                       'cat/50.jpg', 'cat/60.jpg')]
  np.testing.assert_array_equal(data.load_faces(tmp_path / 'whole.rec').labels, labels)

  assert pack.pack(root, tmp_path / 'resumed.rec', progress=False, checkpoint_every=2, stop_after=3).identities == 0
  assert not (tmp_path / 'resumed.rec').exists()  # an interrupted pack leaves no file that looks finished
  pack.pack(root, tmp_path / 'resumed.rec', progress=False, checkpoint_every=2, stop_after=2)
  (root / 'cat' / 'new.jpg').write_bytes(jpeg_bytes(70))  # the folder changed under an unfinished pack
  with pytest.raises(ValueError, match='different file list'):
    pack.pack(root, tmp_path / 'resumed.rec', progress=False)
  (root / 'cat' / 'new.jpg').unlink()
  resumed = pack.pack(root, tmp_path / 'resumed.rec', progress=False, checkpoint_every=2)
  assert resumed == whole
  for suffix in ('.rec', '.idx'):
    assert (tmp_path / f'resumed{suffix}').read_bytes() == (tmp_path / f'whole{suffix}').read_bytes()
  assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ['resumed.idx', 'resumed.rec', 'whole.idx',
                                                                       'whole.rec']


def test_augment_low_resolution_is_adafaces_rescaling():
  img = np.zeros((112, 112, 3), np.uint8)
  img[::2] = 255  # stripes one pixel high: gone at a quarter of the resolution

  class Rng:  # deterministic stand-in: no flip, rescale (0.0 < 0.2), factor 4
    def __init__(self):
      self.draws = iter([1.0, 0.0])

    def random(self):
      return next(self.draws)

    def uniform(self, lo, hi):
      assert (lo, hi) == (1.0, 5.0)
      return 4.0

  out = data.pipeline.augment(img, Rng(), data.AugmentConfig(flip=0.5, low_resolution=0.2))
  small = Image.fromarray(img).resize((28, 28), Image.BOX)
  np.testing.assert_array_equal(out, np.asarray(small.resize((112, 112), Image.BICUBIC)))
  assert out.std() < 2  # the stripes averaged away
