"""Every colab/ notebook runs top to bottom (a short smoke version of its training) without error."""

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'colab').glob('*.ipynb'))


@pytest.fixture(scope='module')
def shared_runs(tmp_path_factory):
  """One demo workdir for all notebooks: the first trains the smoke runs, the others reload them."""
  return tmp_path_factory.mktemp('notebook_runs')


@pytest.mark.slow
@pytest.mark.parametrize('notebook', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(notebook, shared_runs, tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat', reason="notebook tests need the 'test' extra (nbclient, ipykernel)")
  from nbclient import NotebookClient
  monkeypatch.setenv('FVJAX_NOTEBOOK_STEPS', '2')
  monkeypatch.setenv('FVJAX_NOTEBOOK_WORKDIR', str(shared_runs / 'demo'))
  monkeypatch.setenv('FVJAX_CACHE', str(shared_runs / 'cache'))
  nb = nbformat.read(shutil.copy(notebook, tmp_path), as_version=4)
  NotebookClient(nb, timeout=1200, kernel_name='python3', resources={'metadata': {'path': str(ROOT)}}).execute()
  errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
  assert not errors, errors
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if 'image/png' in o.get('data', {})]
  assert images, 'the notebook shows no picture'


def _builder():
  spec = importlib.util.spec_from_file_location('build_notebooks', ROOT / 'colab' / 'build_notebooks.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_committed_notebooks_match_their_builder_and_keep_outputs():
  nbformat = pytest.importorskip('nbformat', reason="notebook tests need the 'test' extra (nbclient, ipykernel)")
  builder = _builder()
  assert sorted(builder.NOTEBOOKS) == [p.stem for p in NOTEBOOKS]
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    assert [(c.cell_type, c.source) for c in nb.cells] == builder.NOTEBOOKS[path.stem], (
        f'{path.name} differs from colab/build_notebooks.py: rebuild and re-execute it')
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert all(c.outputs for c in code), f'{path.name} is committed without its outputs: run colab/execute.py'
