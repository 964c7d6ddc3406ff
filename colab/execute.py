"""Executes notebooks top to bottom (fails on the first error) and saves them with their outputs.

Run: python colab/execute.py colab/quickstart.ipynb [--out DIR] [--figures DIR]   (working directory: the repository
root). --figures writes every picture a notebook shows as DIR/<notebook>_<k>.png (k counts from 1, in cell order).
"""

import argparse
import base64
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, out: Path, timeout: int = 1800) -> nbformat.NotebookNode:
  nb = nbformat.read(path, as_version=4)
  NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(Path.cwd())}}).execute()
  nbformat.write(nb, out)
  return nb


def save_figures(nb: nbformat.NotebookNode, stem: str, folder: Path) -> list[Path]:
  """Writes the PNG outputs of an executed notebook as folder/<stem>_<k>.png."""
  pngs = [o['data']['image/png'] for c in nb.cells if c.cell_type == 'code' for o in c.outputs
          if 'image/png' in o.get('data', {})]
  folder.mkdir(parents=True, exist_ok=True)
  paths = [folder / f'{stem}_{k}.png' for k in range(1, len(pngs) + 1)]
  for path, png in zip(paths, pngs):
    path.write_bytes(base64.b64decode(png))
  return paths


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('notebooks', nargs='+', type=Path)
  parser.add_argument('--out', type=Path, default=None, help='write executed copies here (default: in place)')
  parser.add_argument('--figures', type=Path, default=None, help='also write the pictures shown as PNG files here')
  args = parser.parse_args()
  for path in args.notebooks:
    executed = execute(path, (args.out / path.name) if args.out else path)
    print(f'executed {path}')
    if args.figures:
      print('  figures:', ', '.join(str(p) for p in save_figures(executed, path.stem, args.figures)))
