import json

import numpy as np
import pytest

from fvjax.eval import verification as v


def brute_force_kfold(scores, issame, n_folds):
  """Straight loops: for each fold, try every threshold in a fine grid containing all midpoints."""
  folds = np.array_split(np.arange(len(scores)), n_folds)
  accs = []
  for test in folds:
    train = [i for i in range(len(scores)) if i not in set(test)]
    s_sorted = sorted(set(scores[train]))
    candidates = [-np.inf] + [(a + b) / 2 for a, b in zip(s_sorted, s_sorted[1:])] + [np.inf]
    best_t, best_acc = None, -1
    for t in candidates:
      acc = sum((scores[i] >= t) == issame[i] for i in train) / len(train)
      if acc > best_acc:
        best_t, best_acc = t, acc
    accs.append(sum((scores[i] >= best_t) == issame[i] for i in test) / len(test))
  return np.mean(accs)


def test_kfold_accuracy_equals_brute_force():
  rng = np.random.default_rng(0)
  issame = rng.random(60) < 0.5
  scores = np.round(np.where(issame, 0.5, 0.2) + rng.normal(0, 0.2, 60), 2)  # rounding creates ties
  result = v.kfold_accuracy(scores, issame, n_folds=10)
  assert result.accuracy == pytest.approx(brute_force_kfold(scores, issame, 10), abs=1e-12)
  assert len(result.fold_accuracies) == 10


def test_best_threshold_equals_brute_force_with_ties():
  rng = np.random.default_rng(1)
  for _ in range(20):
    n = int(rng.integers(2, 40))
    issame = rng.random(n) < 0.5
    scores = np.round(rng.normal(issame * 0.5, 0.3), 1)  # heavy ties
    unique = np.unique(scores)
    candidates = np.r_[-np.inf, (unique[:-1] + unique[1:]) / 2, np.inf]
    accuracy = [np.mean((scores >= t) == issame) for t in candidates]
    assert v.best_threshold(scores, issame) == candidates[int(np.argmax(accuracy))]  # the smallest on ties


def test_kfold_accuracy_scales_to_template_pair_counts():
  """Half a million pairs (CFP templates, all pairs) with a [thresholds x pairs] matrix would need 30 GB; the
  accuracy of two unit Gaussians 2 apart at the best threshold is Phi(1) = 0.8413."""
  rng = np.random.default_rng(0)
  issame = rng.random(500_000) < 0.5
  result = v.kfold_accuracy(rng.normal(np.where(issame, 1.0, -1.0), 1.0), issame)
  assert result.accuracy == pytest.approx(0.8413, abs=0.003)


def test_kfold_perfectly_separable():
  scores = np.array([0.9, 0.1] * 10)
  issame = np.array([True, False] * 10)
  assert v.kfold_accuracy(scores, issame).accuracy == 1.0


def test_roc_and_tar_at_far_hand_case():
  scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
  issame = np.array([True, True, False, True, False, False, True, False])
  far, tar, thresholds = v.roc_curve(scores, issame)
  np.testing.assert_allclose(far, [0, 0, 0, 0.25, 0.25, 0.5, 0.75, 0.75, 1.0])
  np.testing.assert_allclose(tar, [0, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 1.0, 1.0])
  assert thresholds[0] == np.inf and thresholds[-1] == 0.2
  result = v.tar_at_far(scores, issame, fars=(0.25, 0.5, 0.1))
  assert result[0.25] == 0.75 and result[0.5] == 0.75
  assert np.isnan(result[0.1])  # 4 impostors: FAR 0.1 cannot be resolved
  # AUC of this curve by hand: trapezoids
  assert v.verification_report(scores, issame, n_folds=2)['auc'] == pytest.approx(0.5 * 0.25 + 0.75 * 0.5 + 1.0 * 0.25)


def test_roc_ties_move_together():
  far, tar, _ = v.roc_curve(np.array([0.5, 0.5, 0.1]), np.array([True, False, False]))
  np.testing.assert_allclose(far, [0, 0.5, 1.0])
  np.testing.assert_allclose(tar, [0, 1.0, 1.0])


def test_make_pairs_balanced_and_valid():
  labels = np.repeat(np.arange(6), 4)
  pairs, issame = v.make_pairs(labels, 100, seed=0)
  assert issame.sum() == 50
  np.testing.assert_array_equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], issame)
  assert np.all(pairs[:, 0] != pairs[:, 1])
  for fold in np.array_split(np.arange(100), 10):  # every fold balanced
    assert issame[fold].sum() == 5


def test_embed_images_flip_sums_then_normalises():
  def embed_fn(x):  # "embedding" = mean of the left and right halves: flip swaps them
    return np.stack([x[:, :, :56].mean(axis=(1, 2, 3)), x[:, :, 56:].mean(axis=(1, 2, 3))], axis=1)

  images = np.zeros((3, 112, 112, 3), np.uint8)
  images[:, :, :56] = 255
  no_flip = v.embed_images(embed_fn, images, batch_size=2, flip=False)
  np.testing.assert_allclose(no_flip, [[1.0, -1.0]] / np.sqrt(2) * np.ones((3, 1)), atol=1e-6)
  with_flip = v.embed_images(embed_fn, images, batch_size=2, flip=True)  # (1,-1) + (-1,1) = 0
  np.testing.assert_allclose(with_flip, 0.0, atol=1e-6)


def test_pair_scores_are_cosines():
  emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
  np.testing.assert_allclose(v.pair_scores(emb, np.array([[0, 1], [0, 2], [1, 2]])), [0.6, 0.0, 0.8])


def test_roc_needs_both_classes():
  with pytest.raises(ValueError, match='genuine and impostor'):
    v.roc_curve(np.array([0.1, 0.2]), np.array([True, True]))


def _png(seed):
  import io

  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(buf, 'PNG')
  return buf.getvalue()


def _pixels(x):
  return x.reshape(len(x), -1)[:, ::97]  # pixels as the "embedding": same image -> cosine 1


def test_pair_set_report_on_a_bin_set(tmp_path):
  from fvjax import data
  from fvjax.eval import pairs

  # 10 pairs: even pairs are the same image twice (issame), odd pairs two different random images.
  images, issame = [], []
  for i in range(10):
    images += [_png(i), _png(i) if i % 2 == 0 else _png(100 + i)]
    issame.append(i % 2 == 0)
  data.write_bin(tmp_path / 'toy.bin', images, issame)
  report = pairs.pair_set_report(tmp_path / 'toy.bin', _pixels, flip=False)
  assert report['pairs'] == 10 and report['accuracy'] == 1.0 and report['auc'] == 1.0


def write_lfw(root, folds=10):
  """An LFW-layout folder as LFW distributes it: pairs.txt (tab-separated, `folds n` header) + name/name_000i.jpg.
  Genuine pairs are one image twice over (image 1 and a byte copy, image 2); impostors two people."""
  people = ['Ann_Lee', 'Bob_Ray', 'Cy_Twombly'] + [f'Person_{k}' for k in range(folds - 2)]
  for k, name in enumerate(people):
    (root / name).mkdir(parents=True)
    (root / name / f'{name}_0001.jpg').write_bytes(_png(k))
    (root / name / f'{name}_0002.jpg').write_bytes(_png(k))
  lines = [f'{folds}\t1']
  for f in range(folds):
    lines += [f'{people[f]}\t1\t2', f'{people[f]}\t1\t{people[f + 1]}\t2']
  (root / 'pairs.txt').write_text('\n'.join(lines) + '\n')
  return root


def test_lfw_pairs_read_in_file_order(tmp_path):
  from fvjax import data
  from fvjax.eval import pairs

  root = write_lfw(tmp_path / 'lfw')
  encoded, issame = data.read_pairs(root)
  assert issame.tolist() == [True, False] * 10
  assert encoded[0] == (root / 'Ann_Lee' / 'Ann_Lee_0001.jpg').read_bytes()
  assert encoded[3] == (root / 'Bob_Ray' / 'Bob_Ray_0002.jpg').read_bytes()  # 'Ann_Lee 1 Bob_Ray 2'
  assert encoded[5] == (root / 'Bob_Ray' / 'Bob_Ray_0002.jpg').read_bytes()  # 'Bob_Ray 1 2'
  data.write_bin(tmp_path / 'same.bin', encoded, issame)  # the same pairs as a .bin score the same
  from_folder = pairs.pair_set_report(root, _pixels, flip=False)
  from_bin = pairs.pair_set_report(tmp_path / 'same.bin', _pixels, flip=False)
  assert json.dumps(from_folder) == json.dumps(from_bin)  # (NaN != NaN: compare the text)
  assert pairs.report_name(root) == 'lfw'


def test_lfw_errors_name_the_problem(tmp_path):
  from fvjax import data

  with pytest.raises(data.DatasetError, match='pairs.txt does not exist'):
    data.read_pairs(tmp_path)
  root = write_lfw(tmp_path / 'lfw')
  (root / 'Cy_Twombly' / 'Cy_Twombly_0002.jpg').unlink()
  with pytest.raises(data.DatasetError, match='images that do not exist, e.g. .*Cy_Twombly_0002.jpg'):
    data.read_pairs(root)
  (root / 'pairs.txt').write_text('10\t300\nAnn_Lee\t1\t2\n')
  with pytest.raises(data.DatasetError, match='1 pair lines, the header announces 6000'):
    data.read_pairs(root)
  (root / 'pairs.txt').write_text('1\t1\nAnn_Lee\t1\nAnn_Lee\t1\tBob_Ray\t1\n')
  with pytest.raises(data.DatasetError, match=r'pairs.txt:2: expected'):
    data.read_pairs(root)


def test_cfp_style_pair_files_read_in_file_order_and_errors_name_the_line(tmp_path):
  from fvjax import data

  root = write_lfw(tmp_path / 'lfw')  # reuse its images; the pair file names them by path
  lines = ['1 Ann_Lee/Ann_Lee_0001.jpg Ann_Lee/Ann_Lee_0002.jpg 1',
           '1 Ann_Lee/Ann_Lee_0001.jpg Bob_Ray/Bob_Ray_0002.jpg 0',
           '2 Bob_Ray/Bob_Ray_0001.jpg Bob_Ray/Bob_Ray_0002.jpg 1',
           '2 Bob_Ray/Bob_Ray_0001.jpg Ann_Lee/Ann_Lee_0002.jpg 0']
  listing = root / 'pairs_FP.txt'
  listing.write_text('\n'.join(lines) + '\n')
  encoded, issame = data.read_pairs(listing)
  assert issame.tolist() == [True, False, True, False]
  assert encoded[3] == (root / 'Bob_Ray' / 'Bob_Ray_0002.jpg').read_bytes()
  assert encoded[7] == (root / 'Ann_Lee' / 'Ann_Lee_0002.jpg').read_bytes()
  listing.write_text('\n'.join(lines[2:] + lines[:2]))
  with pytest.raises(data.DatasetError, match='ascending order, contiguous and of equal size'):
    data.read_pairs(listing)
  listing.write_text('\n'.join(lines[:3]))
  with pytest.raises(data.DatasetError, match=r'equal size \(found sizes \[2, 1\]\)'):
    data.read_pairs(listing)
  listing.write_text(lines[0] + '\n1 a.jpg b.jpg yes\n')
  with pytest.raises(data.DatasetError, match=r'pairs_FP.txt:2: expected "fold path1 path2 same"'):
    data.read_pairs(listing)
  listing.write_text('1 Ann_Lee/Ann_Lee_0009.jpg Ann_Lee/Ann_Lee_0002.jpg 1\n')
  with pytest.raises(data.DatasetError, match='1 images that do not exist, e.g. .*Ann_Lee_0009.jpg'):
    data.read_pairs(listing)


def test_insightface_tar_at_far_equals_sklearn_roc_read_as_insightface_does():
  metrics = pytest.importorskip('sklearn.metrics', reason='the oracle is scikit-learn (the test extra installs it)')
  rng = np.random.default_rng(0)
  for trial in range(10):
    n = int(rng.integers(50, 400))
    issame = rng.random(n) < 0.3
    scores = np.round(rng.normal(size=n) + 1.5 * issame, 1)  # rounded: ties and collinear runs
    fars = (1e-3, 1e-2, 0.05, 0.1, 0.3)
    fpr, tpr, _ = metrics.roc_curve(issame, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)  # insightface's IJB evaluation: the closest FPR, ties to the first
    expected = [tpr[min(zip(np.abs(fpr - f), range(len(fpr))))[1]] for f in fars]
    got = v.tar_at_far(scores, issame, fars, method="insightface")
    np.testing.assert_allclose([got[f] for f in fars], expected, err_msg=f'trial {trial}')
  with pytest.raises(ValueError, match='unknown TAR@FAR method'):
    v.tar_at_far(scores, issame, fars, method="closest")
