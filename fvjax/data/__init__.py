"""Face data: identity folders (TFDS), insightface .bin/.rec readers, host pipeline."""

from fvjax.data.folder import DatasetError, FaceDataset, IdentityFolder, load_identity_folder, scan_identity_folder
from fvjax.data.folder import dataset_path, split_identities
from fvjax.data.insightface import RecordIODataset, load_recordio, read_bin, write_bin, write_recordio
from fvjax.data.pairs import read_lfw, read_pair_images, read_pairs
from fvjax.data.pipeline import AugmentConfig, augment, decode_all, iterate, prefetch_to_device, train_batches


def load_faces(path, cache_dir=None, align: str = 'never') -> FaceDataset:
  """Opens a training set: an identity folder (align: 'auto', 'always' or 'never', see `fvjax.data.folder`), or an
  insightface `.rec` file (aligned crops already)."""
  return load_recordio(path) if str(path).endswith('.rec') else load_identity_folder(path, cache_dir, align)


__all__ = [
    'AugmentConfig', 'DatasetError', 'augment', 'FaceDataset', 'IdentityFolder', 'RecordIODataset', 'dataset_path', 'decode_all', 'iterate',
    'load_faces', 'load_identity_folder', 'load_recordio', 'prefetch_to_device', 'read_bin', 'read_lfw',
    'read_pair_images', 'read_pairs', 'scan_identity_folder', 'split_identities', 'train_batches', 'write_bin',
    'write_recordio'
]
