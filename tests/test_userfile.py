import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from fvjax import backbones, cli, data, edge, enroll, imageio, userfile, verifiers
from fvjax.eval import identification
from fvjax.data import write_bin
from fvjax.train import run_log
from fvjax.models import verifier


def make_user(theta=None):
  theta = np.asarray(verifier.init_theta(jax.random.key(0))) if theta is None else theta
  return userfile.User(theta=theta, spec=edge.VerifierSpec().to_dict(), name='alice', threshold=0.5,
                       sources=('a.jpg',))


def test_user_file_roundtrip(tmp_path):
  user = make_user()
  userfile.save(tmp_path / 'alice.fvjax', user)
  loaded = userfile.load(tmp_path / 'alice.fvjax')
  np.testing.assert_array_equal(loaded.theta, user.theta)
  assert (loaded.name, loaded.threshold, loaded.sources) == ('alice', 0.5, ('a.jpg',))
  assert edge.VerifierSpec.from_dict(loaded.spec) == edge.VerifierSpec()
  assert (tmp_path / 'alice.fvjax').stat().st_size < 100_000  # a few tens of KB


def test_corrupted_and_foreign_user_files(tmp_path):
  path = tmp_path / 'u.fvjax'
  userfile.save(path, make_user())
  raw = bytearray(path.read_bytes())
  raw[200:210] = b'\x00' * 10  # flip bytes inside theta
  (tmp_path / 'flipped.fvjax').write_bytes(bytes(raw))
  with pytest.raises(userfile.UserFileError, match='flipped.fvjax'):
    userfile.load(tmp_path / 'flipped.fvjax')
  (tmp_path / 'truncated.fvjax').write_bytes(path.read_bytes()[:500])
  with pytest.raises(userfile.UserFileError, match='truncated.fvjax'):
    userfile.load(tmp_path / 'truncated.fvjax')
  meta = {'format': 'fvjax-user', 'format_version': 99}
  np.savez(tmp_path / 'future.npz', theta=np.zeros(3, np.float32),
           meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
  with pytest.raises(userfile.UserFileError, match='version 99'):
    userfile.load(tmp_path / 'future.npz')
  with pytest.raises(userfile.UserFileError, match='does not exist'):
    userfile.load(tmp_path / 'missing.fvjax')


def test_enrolment_with_zero_images_is_refused(tmp_path):
  with pytest.raises(ValueError, match='at least one image'):
    enroll.from_images(tmp_path, np.zeros((0, 112, 112, 3), np.uint8), [], 'nobody')


@pytest.mark.slow
def test_backbone_hypernet_coreset_enroll_verify_end_to_end(tmp_path, capsys):
  faces = cli.DEMO_DATA
  bb, hy = tmp_path / 'backbone', tmp_path / 'hyper'
  cli.main(['train', '--config', 'experiments/seesaw_celeba_cpu.py', '--workdir', str(bb), '--set', f'data_dir={faces}', '--set', 'align=never',
            '--set', 'total_steps=1', '--set', 'batch_size=8', '--set', 'eval_pairs=100',
            '--set', 'backbone=mobilefacenet'])
  _, before, _, _ = backbones.load_trained(bb)
  photos = [sorted(p.iterdir()) for p in sorted(Path(faces).iterdir()) if p.is_dir()][:3]
  pairs = [pair for i in range(10)  # a tiny insightface .bin: 10 genuine, 10 impostor pairs, images (2i, 2i+1)
           for pair in ((photos[i % 3][i % 9], photos[i % 3][i % 9 + 1]), (photos[i % 3][i], photos[(i + 1) % 3][i]))]
  write_bin(tmp_path / 'tiny.bin', [f.read_bytes() for pair in pairs for f in pair],
                 [a.parent == b.parent for a, b in pairs])
  cli.main(['hyper', '--config', 'experiments/hyper_celeba_cpu.py', '--workdir', str(hy),
            '--set', f'backbone={bb}', '--set', 'total_steps=3', '--set', 'users_per_batch=4',
            '--set', 'num_clusters=2', '--set', 'kcs_start=1', '--set', 'norm_penalty_start=2',
            '--set', 'eval_pairs=100', '--set', 'hidden=16', '--set', f'eval_bins=("{tmp_path / "tiny.bin"}",)'])
  _, after, _, _ = backbones.load_trained(bb)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))  # h_bb frozen
  report = json.loads((hy / 'report.json').read_text())
  assert report['verifier_params'] == 23_617 and report['backbone_params'] == 1_200_512
  assert set(report['verification']) == {'held_out_identities', 'validation_identities', 'training_identities', 'tiny'}
  for protocol in report['verification'].values():
    assert set(protocol) == {'embedding_cosine', 'verifier_enrol_first', 'verifier_enrol_second'}
  assert report['verification']['tiny']['embedding_cosine']['pairs'] == 20
  assert report['verification']['training_identities']['embedding_cosine']['pairs'] == 100  # eval_pairs, seen people
  out = capsys.readouterr().out
  assert 'verifier_enrol_first' in out and 'tiny' in out

  cs = tmp_path / 'coreset'
  coreset_args = ['coreset', '--config', 'experiments/coreset_celeba_cpu.py', '--workdir', str(cs),
                  '--set', f'backbone={bb}', '--set', f'hyper_workdir={hy}', '--set', 'total_steps=2',
                  '--set', 'eval_every=1', '--set', 'checkpoint_every=1', '--set', 'sets_per_batch=4',
                  '--set', 'max_set_size=5', '--set', 'enrolment.set_size=3', '--set', 'selection_far=0.1']
  cli.main(coreset_args)
  report = json.loads((cs / 'report.json').read_text())
  assert report['aggregator_params'] == 2_104_321
  validation = run_log.read_scalars(cs)['validation/tar_at_far_0.1']  # (too few impostor pairs for 1e-2)
  best = report['selection']['best_step']  # the coreset is evaluated at its best validation step, the earliest of equals
  assert set(validation) == {1, 2} and report['steps'] == best and validation[best] == max(validation.values())
  assert best == 1 or validation[1] < validation[2]
  assert report['selection']['best_validation']['tar_at_far_0.1'] == pytest.approx(validation[best])
  assert set(report['sets']) == {'coreset', 'mean_pooling', 'norm_weighted_pooling'}
  assert {'single_image', 'set_mean', 'set_coreset'} <= set(report['enrolment'])
  assert 'set_coreset' in capsys.readouterr().out
  cli.main(coreset_args)  # a finished run: no training, the same selected parameters and report
  assert json.loads((cs / 'report.json').read_text()) == report

  set_user = tmp_path / 's1_set.fvjax'
  cli.main(['enroll', '--hyper', str(hy), '--images', str(faces / 's1'), '--aggregate', 'coreset',
            '--coreset', str(cs), '--out', str(set_user), '--align', 'never'])
  assert userfile.load(set_user).sources == tuple(f'{i}.pgm' for i in sorted(range(1, 11), key=str))
  with pytest.raises(ValueError, match='needs the workdir'):
    enroll.from_images(hy, np.zeros((1, 112, 112, 3), np.uint8), ['1.pgm'], 's1', aggregate='coreset')

  user = tmp_path / 's1.fvjax'
  cli.main(['enroll', '--hyper', str(hy), '--images', str(faces / 's1' / '1.pgm'), str(faces / 's1' / '2.pgm'),
            '--out', str(user), '--align', 'never'])
  probes = [str(faces / 's1' / '3.pgm'), str(faces / 's2' / '1.pgm')]
  # verify runs with JAX made unimportable: the user file needs NumPy only (the face check needs MTCNN, in JAX).
  script = ('import sys; sys.modules["jax"] = None; from fvjax.cli import main; '
            f'main(["verify", {str(user)!r}, *{probes!r}, "--align", "never", "--no-face-check"])')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [l for l in result.stdout.splitlines() if 'logit' in l]
  assert len(lines) == 2 and "user 's1'" in result.stdout
  # the NumPy scores equal the JAX forward of the same file
  loaded = userfile.load(user)
  inputs = edge.verifier_input(np.stack([imageio.decode_face(open(p, 'rb').read()) for p in probes]), edge.VerifierSpec())
  jax_logits = np.asarray(verifier.apply(loaded.theta, inputs))
  printed = [float(l.split('logit')[1].split()[0]) for l in lines]
  np.testing.assert_allclose(printed, jax_logits, atol=2e-3)

  # The Python API enrols the same two images to the same theta as `fvjax enroll`, and scores like the NumPy twin.
  gen = verifiers.load(hy)
  two = np.stack([imageio.decode_face((faces / 's1' / f'{i}.pgm').read_bytes()) for i in (1, 2)])
  thetas = gen.enroll(two[None])
  np.testing.assert_allclose(thetas[0], loaded.theta, rtol=1e-4, atol=1e-6)
  probe_faces = np.stack([imageio.decode_face(open(p, 'rb').read()) for p in probes])
  np.testing.assert_allclose(gen.score(thetas, probe_faces)[0], printed, atol=2e-3)
  np.testing.assert_allclose(gen.score_pairs(np.repeat(thetas, 2, axis=0), probe_faces), printed, atol=2e-3)
  assert gen.enroll(two).shape == (2, 23_617) and gen.thresholds(thetas).shape == (1,)
  with pytest.raises(ValueError, match=r'faces must be aligned uint8 faces \[U, 112, 112, 3\] or'):
    gen.enroll(two.astype(np.float32))

  # The run's calibrated operating point holds for `fvjax verify`: every held-out person enrols from the image the
  # run's identification protocol enrolled, and verify accepts their other photos at the rate the report states.
  point = json.loads((hy / 'report.json').read_text())['identification']['operating_point']
  assert point['calibration_images'] > 0 and point['far_target'] == 1e-3
  dataset = data.load_faces(faces, align='never')
  _, test_idx = data.split_identities(dataset.labels, 0.25, 0)
  enrol, probes, truth = identification.enrolment_split(dataset.labels[test_idx], seed=0)
  path_of = lambda row: faces / dataset.source[int(test_idx[row])]['path'].decode()
  accepted = 0
  for g, row in enumerate(enrol):
    person = enroll.from_images(hy, imageio.decode_face(path_of(row).read_bytes())[None], [path_of(row).name],
                                f'person{g}')
    assert person.calibration['far'] == 1e-3 and person.calibration['impostors'] == point['calibration_images']
    userfile.save(tmp_path / 'person.fvjax', person)
    own = [str(path_of(p)) for p in probes[truth == g]]
    capsys.readouterr()
    cli.main(['verify', str(tmp_path / 'person.fvjax'), *own, '--align', 'never'])
    accepted += capsys.readouterr().out.count('ACCEPT')
  assert abs(accepted / len(probes) - point['verifier']['tar']) <= 2 / len(probes)

  # The same people in a gallery, grown by enrolment alone, and identified from the command line.
  people = tmp_path / 'gallery'
  for g, row in enumerate(enrol[:3]):
    assert cli.main(['gallery', 'add', str(people), '--hyper', str(hy), '--name', f'person{g}',
                     '--images', str(path_of(row)), '--align', 'never']) == 0
  capsys.readouterr()
  probe = path_of(probes[truth == 0][0])
  assert cli.main(['gallery', 'identify', str(people), str(probe), '--top-k', '3', '--align', 'never']) == 0
  out = capsys.readouterr().out
  assert str(probe) in out and all(f'person{g} ' in out for g in range(3))
  assert cli.main(['gallery', 'list', str(people)]) == 0 and '3 user(s)' in capsys.readouterr().out


@pytest.mark.slow
def test_hypernetwork_on_the_pretrained_backbone_enrols_a_raw_photo(tmp_path, celeba_dir, capsys):
  """backbone=pretrained:dlib_resnet: features cached per data folder, and `fvjax enroll` aligns an unaligned photo."""
  from PIL import Image

  from fvjax.data import folder
  hy = tmp_path / 'hyper'
  args = ['hyper', '--config', 'experiments/hyper_celeba_cpu.py', '--workdir', str(hy),
          '--set', 'backbone=pretrained:dlib_resnet', '--set', f'data_dir={cli.DEMO_DATA}', '--set', 'align=never', '--set', 'total_steps=2',
          '--set', 'users_per_batch=4', '--set', 'num_clusters=2', '--set', 'kcs_start=1', '--set', 'eval_pairs=40',
          '--set', 'hidden=16']
  cli.main(args)
  report = json.loads((hy / 'report.json').read_text())
  assert report['backbone'] == 'pretrained:dlib_resnet' and report['backbone_params'] == 5_614_592
  assert report['verification']['held_out_identities']['embedding_cosine']['auc'] > 0.95  # a strong backbone
  # Validated while training on the people kept out of it: the last step's point is the report's figure.
  from fvjax.train import run_log
  logged = run_log.read_scalars(hy / 'tensorboard' / 'validation')['validation/auc']
  assert list(logged) == [2]
  assert logged[2] == pytest.approx(report['verification']['validation_identities']['verifier_enrol_first']['auc'],
                                    abs=1e-6)
  cached = list((folder.DEFAULT_CACHE / 'features' / 'dlib_resnet').glob('att_faces_*/features.npy'))
  assert len(cached) == 1 and np.load(cached[0], mmap_mode='r').shape == (380, 2, 128)

  # `fvjax eval` puts the run's verifiers (both enrolment orders) beside its backbone on one pair file.
  pair_file = tmp_path / 'att_pairs.txt'
  att = lambda person, image: cli.DEMO_DATA / f's{person}' / f'{image}.pgm'
  pair_file.write_text(''.join(f'{fold} {att(fold, 1)} {att(fold, 2)} 1\n{fold} {att(fold, 3)} {att(fold + 10, 1)} 0\n'
                               for fold in range(1, 11)))
  capsys.readouterr()
  cli.main(['eval', '--models', 'pretrained:dlib_resnet', str(hy), '--pairs', str(pair_file), '--format', 'csv'])
  rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
  assert [r['model'] for r in rows] == ['pretrained:dlib_resnet', f'{hy} (enrol first)', f'{hy} (enrol second)']
  assert [int(r['params']) for r in rows] == [5_614_592, 23_617, 23_617]
  assert all(0 <= float(r['att_pairs']) <= 100 for r in rows)

  crop = np.asarray(Image.open(sorted(celeba_dir.glob('*/*.jpg'))[0]).convert('RGB'))
  selfie = Image.new('RGB', (480, 360), (128, 128, 128))
  selfie.paste(Image.fromarray(crop).resize((240, 240), Image.BICUBIC).rotate(-8, fillcolor=(128, 128, 128)), (150, 50))
  selfie.save(tmp_path / 'selfie.jpg')
  user = tmp_path / 'me.fvjax'
  cli.main(['enroll', '--hyper', str(hy), '--images', str(tmp_path / 'selfie.jpg'), '--out', str(user)])
  assert userfile.load(user).sources == ('selfie.jpg',)
  cli.main(['verify', str(user), str(tmp_path / 'selfie.jpg')])
  assert 'selfie.jpg' in capsys.readouterr().out
