"""Shared fixtures. Real-data tests use ../shared/data (or $FVJAX_SHARED_DATA) and skip when it is absent; the
experiment configs find it as their $FVJAX_DATA_DIR unless that is set."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get('FVJAX_SHARED_DATA', Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))
os.environ.setdefault('FVJAX_DATA_DIR', str(SHARED_DATA))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
  """Prepared TFDS datasets go to a per-test cache, never the user's."""
  monkeypatch.setattr('fvjax.data.folder.DEFAULT_CACHE', tmp_path / 'fvjax_cache')


@pytest.fixture
def celeba_dir():
  path = SHARED_DATA / 'celeba_aligned'
  if not path.is_dir():
    pytest.skip(f'real CelebA faces not found at {path} (set FVJAX_SHARED_DATA to the shared data folder)')
  return path
