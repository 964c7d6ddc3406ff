"""Calibrated thresholds, 1:N identification metrics, and the gallery of user files."""

import multiprocessing
import os

import jax
import numpy as np
import pytest

from fvjax import calibration, cli, edge, gallery, userfile
from fvjax.eval import identification
from fvjax.models import verifier

SPEC = verifier.VerifierSpec()


def test_threshold_at_far_by_hand():
  scores = np.arange(10) / 10.0  # impostors 0.0 .. 0.9
  c = calibration.threshold_at_far(scores, 0.1, identities=3)
  assert 0.8 < c.threshold <= np.nextafter(0.8, 1.0) and c.far_achieved == 0.1  # 0.9 accepted, 0.8 rejected
  assert (c.impostors, c.identities, c.far) == (10, 3, 0.1)
  c = calibration.threshold_at_far(scores, 0.05, identities=3)  # below 1/10: above every impostor
  assert c.threshold > 0.9 and c.far_achieved == 0.0 and 'below 1/10' in c.describe()
  tied = calibration.threshold_at_far(np.array([1.0, 1.0, 1.0, 0.0]), 0.5, identities=1)
  assert tied.threshold > 1.0 and tied.far_achieved == 0.0  # ties are accepted or rejected together
  for bad, match in (([], 'none were given'), ([0.1, np.nan], 'not finite')):
    with pytest.raises(ValueError, match=match):
      calibration.threshold_at_far(np.array(bad), 0.1, 1)
  with pytest.raises(ValueError, match=r'\(0, 1\)'):
    calibration.threshold_at_far(scores, 1.0, 1)


def test_threshold_at_far_is_the_lowest_that_meets_the_target():
  rng = np.random.default_rng(0)
  for _ in range(20):
    scores = np.round(rng.normal(size=rng.integers(5, 60)), 1)  # with ties
    far = float(rng.uniform(0.01, 0.5))
    c = calibration.threshold_at_far(scores, far, 1)
    candidates = np.concatenate([scores, np.nextafter(scores, np.inf)])
    feasible = [t for t in candidates if np.mean(scores >= t) <= far]
    assert c.threshold == min(feasible)
    assert c.far_achieved == np.mean(scores >= c.threshold) <= far


def test_ranks_cmc_and_dir_by_hand():
  scores = np.array([[0.9, 0.1, 0.2],   # probe of entry 0: rank 1
                     [0.5, 0.4, 0.6],   # probe of entry 1: rank 3
                     [0.3, 0.8, 0.8],   # probe of entry 2: tied with entry 1 -> rank 2
                     [0.7, 0.1, 0.1],   # unknown, best 0.7
                     [0.2, 0.3, 0.1]])  # unknown, best 0.3
  truth = np.array([0, 1, 2, -1, -1])
  np.testing.assert_array_equal(identification.true_ranks(scores, truth), [1, 3, 2])
  np.testing.assert_allclose(identification.cmc(scores, truth, 3), [1 / 3, 2 / 3, 1.0])
  # FAR 0.5 of 2 unknowns: one alarm allowed -> threshold just above 0.3; only probe 0 is first and above it.
  assert identification.dir_at_far(scores, truth, fars=(0.5,)) == {'0.5': 1 / 3}
  # FAR 0.1: no alarm -> threshold above 0.7; probe 0 (0.9) still passes.
  assert identification.dir_at_far(scores, truth, fars=(0.1,)) == {'0.1': 1 / 3}
  with pytest.raises(ValueError, match='both known probes and'):
    identification.dir_at_far(scores[:3], truth[:3])


def test_enrolment_split_and_open_set():
  labels = np.array([5, 5, 5, 7, 7, 9])
  enrol, probes, truth = identification.enrolment_split(labels, seed=0)
  assert sorted(labels[enrol].tolist()) == [5, 7, 9]
  assert sorted(np.concatenate([enrol, probes]).tolist()) == list(range(6))  # every image used once
  np.testing.assert_array_equal(labels[enrol][truth], labels[probes])  # truth points at the probe's own entry
  kept, open_truth = identification.open_set(3, truth, seed=0)
  assert len(kept) == 1
  for t, o in zip(truth, open_truth):
    assert (o == 0) if t == kept[0] else (o == -1)


def test_operating_point_counts_genuine_and_impostor_pairs():
  margins = np.array([[0.5, -1.0], [0.2, -0.1], [-0.3, 1.0]])  # probe x entry, accept when >= 0
  point = identification.operating_point(margins, np.array([0, 1, 1]))
  assert point == {'tar': 2 / 3, 'far': 1 / 3, 'genuine_pairs': 3, 'impostor_pairs': 3}


def random_user(name, seed, threshold=0.0):
  theta = np.asarray(verifier.init_theta(jax.random.key(seed), SPEC))
  return userfile.User(theta=theta, spec=SPEC.to_dict(), name=name, threshold=threshold)


def test_gallery_add_remove_list_identify(tmp_path):
  people = gallery.Gallery(tmp_path / 'g')
  users = [random_user(f'person {i}', i, threshold=0.1 * i) for i in range(4)]
  for user in users:
    people.add(user)
  with pytest.raises(gallery.GalleryError, match='already holds a user named'):
    people.add(users[0])
  people.add(random_user('person 0', 9), replace=True)
  users[0] = random_user('person 0', 9)
  assert [p.name for p in people.files()] == [f'person_{i}.fvjax' for i in range(4)]
  faces = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
  matches, problems = people.identify(faces, top_k=4)
  assert not problems
  logits = np.stack([verifier.apply(u.theta, edge.verifier_input(faces, SPEC), SPEC) for u in users])  # [U, P]
  for p, ranked in enumerate(matches):
    margins = logits[:, p] - np.array([u.threshold for u in users])
    assert [m.name for m in ranked] == [users[u].name for u in np.argsort(-margins, kind='stable')]
    np.testing.assert_allclose([m.margin for m in ranked], np.sort(margins)[::-1], atol=1e-4)
    assert all(m.accepted == (m.margin >= 0) for m in ranked)
  people.remove('person 3')
  with pytest.raises(gallery.GalleryError, match="no user 'person 3'"):
    people.remove('person 3')
  assert len(people.load()[0]) == 3


def test_a_bad_user_file_is_named_and_skipped_only_when_asked(tmp_path, capsys):
  people = gallery.Gallery(tmp_path)
  people.add(random_user('good', 0))
  (tmp_path / 'broken.fvjax').write_bytes(b'not a user file')
  with pytest.raises(gallery.GalleryError, match='broken.fvjax'):
    people.load()
  users, problems = people.load(skip_bad=True)
  assert [u.name for u in users] == ['good'] and 'broken.fvjax' in problems[0]
  assert cli.main(['gallery', 'list', str(tmp_path)]) == 1  # listed, and the bad file reported by name
  out = capsys.readouterr().out
  assert 'good' in out and 'UNREADABLE' in out and 'broken.fvjax' in out


def _add_many(path, start, count):
  people = gallery.Gallery(path)
  for i in range(start, start + count):
    people.add(random_user(f'user{i:03d}', i))


def test_concurrent_adds_from_two_processes_lose_nothing(tmp_path):
  context = multiprocessing.get_context('spawn')
  workers = [context.Process(target=_add_many, args=(tmp_path, start, 15)) for start in (0, 15)]
  for w in workers:
    w.start()
  for w in workers:
    w.join(timeout=300)
  assert [w.exitcode for w in workers] == [0, 0]
  users, problems = gallery.Gallery(tmp_path).load()
  assert not problems and sorted(u.name for u in users) == [f'user{i:03d}' for i in range(30)]
  assert not [p for p in os.listdir(tmp_path) if p.startswith('.adding-')]  # no temporary file left behind


def test_verify_exit_status_follows_the_decision(tmp_path):
  face = tmp_path / 'face.png'
  from PIL import Image
  Image.fromarray(np.full((112, 112, 3), 128, np.uint8)).save(face)
  user = random_user('someone', 0)
  logit = float(edge.numpy_forward(user.theta, edge.verifier_input(np.full((1, 112, 112, 3), 128, np.uint8), SPEC),
                                   SPEC)[0])
  for threshold, status in ((logit - 1.0, 0), (logit + 1.0, 1)):
    path = tmp_path / f'{status}.fvjax'
    userfile.save(path, userfile.User(user.theta, user.spec, user.name, threshold=threshold))
    assert cli.main(['verify', str(path), str(face), '--align', 'never', '--no-face-check']) == status
  assert cli.main(['verify', str(path), str(face), '--align', 'never']) == 2  # flat grey is not a face
