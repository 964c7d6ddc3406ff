"""`fvjax eval` as the papers' table (fvjax.eval.table): CFP-style pair files, formats, and the 10-fold figures of
dlib_resnet against an independent NumPy computation on CFP's own folds."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from conftest import SHARED_DATA
from fvjax import cli, pretrained
from fvjax.eval import table

PER_FOLD = 24  # pairs kept of each official fold: 12 genuine, 12 impostor


@pytest.fixture(scope='module')
def cfp_fp_subset(tmp_path_factory):
  """CFP-FP's first 12 genuine and 12 impostor pairs of each of its 10 official folds, as a pair file with absolute
  paths (so its folds are CFP's own)."""
  root = SHARED_DATA / 'cfp_aligned'
  if not (root / 'pairs_FP.txt').is_file():
    pytest.skip(f'CFP not found at {root}')
  lines = [line.split() for line in (root / 'pairs_FP.txt').read_text().splitlines()]
  kept = [l for fold in range(1, 11) for same in ('1', '0')
          for l in [l for l in lines if l[0] == str(fold) and l[3] == same][:PER_FOLD // 2]]
  path = tmp_path_factory.mktemp('cfp') / 'cfp_fp_subset.txt'
  path.write_text(''.join(f'{f} {root / a} {root / b} {s}\n' for f, a, b, s in kept))
  return path, kept


def ten_fold_accuracy_by_hand(scores, same, folds):
  """Per official fold: the threshold with the best accuracy on the other nine (halfway between two of their
  scores; the lowest on ties), applied to it."""
  accuracies = []
  for fold in np.unique(folds):
    train, test = folds != fold, folds == fold
    sorted_scores = np.unique(scores[train])
    candidates = [-np.inf, *((sorted_scores[:-1] + sorted_scores[1:]) / 2), np.inf]
    best = max(candidates, key=lambda t: np.mean((scores[train] >= t) == same[train]))  # max keeps the first
    accuracies.append(np.mean((scores[test] >= best) == same[test]))
  return 100 * np.mean(accuracies), 100 * np.std(accuracies)


def test_dlib_resnet_on_cfp_folds_equals_a_numpy_computation(cfp_fp_subset, capsys):
  path, kept = cfp_fp_subset
  assert cli.main(['eval', '--models', 'pretrained:dlib_resnet', '--pairs', str(path), '--format', 'json']) == 0
  result = json.loads(capsys.readouterr().out)['pretrained:dlib_resnet']
  assert result['params'] == 5_614_592
  reported = result['sets']['cfp_fp_subset']

  model = pretrained.load('dlib_resnet')
  root = SHARED_DATA / 'cfp_aligned'
  faces = lambda column: np.stack([np.asarray(Image.open(root / l[column]).convert('RGB')) for l in kept])
  first, second = model.embed(faces(1), flip=True), model.embed(faces(2), flip=True)
  scores = np.sum(first * second, axis=1)
  same = np.array([l[3] == '1' for l in kept])
  accuracy, std = ten_fold_accuracy_by_hand(scores, same, np.array([int(l[0]) for l in kept]))
  assert 100 * reported['accuracy'] == pytest.approx(accuracy, abs=1e-6)
  assert 100 * reported['accuracy_std'] == pytest.approx(std, abs=1e-6)
  assert reported['auc'] == pytest.approx(roc_auc_score(same, scores), abs=1e-6)


def test_formats_hold_the_same_numbers(cfp_fp_subset, capsys):
  path, _ = cfp_fp_subset
  rows = table.evaluate(['pretrained:dlib_resnet'], [str(path)])
  report = rows[0].reports['cfp_fp_subset']
  markdown = table.format_table(rows, 'accuracy', 'markdown').splitlines()
  assert markdown[0] == '| model | params | MAdds | cfp_fp_subset |'
  cell = f"{100 * report['accuracy']:.2f}±{100 * report['accuracy_std']:.2f}"
  assert markdown[2] == f'| pretrained:dlib_resnet | 5,614,592 | {rows[0].madds / 1e6:.1f}M | {cell} |'
  parsed = list(csv.DictReader(io.StringIO(table.format_table(rows, 'auc', 'csv'))))
  assert float(parsed[0]['cfp_fp_subset']) == pytest.approx(report['auc'], abs=1e-4)
  text = table.format_table(rows, 'tar@1e-3', 'text')
  assert 'TAR % at FAR 1e-3' in text and 'pretrained:dlib_resnet' in text
  with pytest.raises(ValueError, match='format one of'):
    table.format_table(rows, 'accuracy', 'html')
