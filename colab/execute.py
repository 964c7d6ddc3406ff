"""Executes notebooks top to bottom (fails on the first error) and saves them with their outputs.

Run: python colab/execute.py colab/quickstart.ipynb [--out DIR]   (working directory: the repository root)
"""

import argparse
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, out: Path, timeout: int = 1800) -> None:
  nb = nbformat.read(path, as_version=4)
  NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(Path.cwd())}}).execute()
  nbformat.write(nb, out)


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('notebooks', nargs='+', type=Path)
  parser.add_argument('--out', type=Path, default=None, help='write executed copies here (default: in place)')
  args = parser.parse_args()
  for path in args.notebooks:
    execute(path, (args.out / path.name) if args.out else path)
    print(f'executed {path}')
