"""Distillation of a student backbone from a frozen teacher (`fvjax.train.recognition`, config.teacher)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fvjax import backbones, cli, data
from fvjax.eval import verification
from fvjax.train import recognition


def test_descriptor_distillation_loss_by_hand():
  student = jnp.array([[3.0, 4.0], [1.0, 0.0], [0.0, 5.0]])
  teacher = jnp.array([[6.0, 8.0], [0.0, 2.0], [0.0, -0.5]])  # cosines 1, 0, -1
  assert float(recognition.descriptor_distillation_loss(student, teacher)) == pytest.approx((0 + 1 + 2) / 3)
  # Only directions count: rescaling either side leaves the loss unchanged.
  assert float(recognition.descriptor_distillation_loss(7 * student, teacher / 3)) == pytest.approx(1.0)
  # Aligned rows give no gradient; an orthogonal row is pushed towards the teacher: d(1 - cos)/ds = -t/|s||t| there.
  grad = jax.grad(recognition.descriptor_distillation_loss)(student, teacher)
  np.testing.assert_allclose(grad[0], 0.0, atol=1e-7)
  np.testing.assert_allclose(grad[1], [0.0, -1.0 / 3], atol=1e-7)
  with pytest.raises(AssertionError):
    recognition.descriptor_distillation_loss(student, teacher[:, :1])


def test_nothing_to_train_and_a_mismatched_student_are_refused(tmp_path):
  config = recognition.default_config()
  config.data_dir, config.align = str(cli.DEMO_DATA), 'never'
  config.margin_weight = 0.0
  with pytest.raises(ValueError, match='nothing to train'):
    recognition.run(config, tmp_path / 'a')
  config.teacher = 'pretrained:dlib_resnet'  # 128-d descriptors; the default student is 512-d
  with pytest.raises(ValueError, match='embedding_size=128, got 512'):
    recognition.run(config, tmp_path / 'b', progress=False)


@pytest.mark.slow
def test_student_distils_from_dlib_on_centred_descriptors_of_clean_images(tmp_path):
  workdir = tmp_path / 'student'
  cli.main(['train', '--config', 'experiments/seesaw_distill_celeba_cpu.py', '--workdir', str(workdir),
            '--set', f'data_dir={cli.DEMO_DATA}', '--set', 'align=never', '--set', 'backbone=mobilefacenet',
            '--set', 'total_steps=2', '--set', 'batch_size=8', '--set', 'eval_pairs=100', '--set', 'eval_bins=()',
            '--set', 'optimizer.warmup_steps=0'])
  report = json.loads((workdir / 'report.json').read_text())
  assert report['teacher'] == 'pretrained:dlib_resnet' and report['steps'] == 2
  logged = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert logged[-1]['loss'] == pytest.approx(logged[-1]['distillation'])  # margin_weight 0: distillation alone

  # The targets, recomputed from the teacher's own forward pass on the decoded crops: image + mirror descriptors
  # summed and normalised, centred on the training images' mean, normalised again.
  config = cli.load_config('experiments/seesaw_distill_celeba_cpu.py', [f'data_dir={cli.DEMO_DATA}', 'align=never'])
  faces = data.load_faces(config.data_dir, align='never')
  train_idx, _ = data.split_identities(faces.labels, config.test_fraction, config.split_seed)
  targets = recognition.teacher_targets(config, faces, train_idx)
  teacher = backbones.load('pretrained:dlib_resnet')
  descriptors = verification.embed_images(teacher.features_fn, data.decode_all(faces, train_idx), flip=True)
  centred = descriptors - descriptors.mean(axis=0)
  expected = centred / np.linalg.norm(centred, axis=1, keepdims=True)
  rows = np.random.default_rng(0).permutation(len(train_idx))[:40]
  np.testing.assert_allclose(targets(train_idx[rows]), expected[rows], atol=2e-5)
  # Raw dlib descriptors share a dominant mean direction; centred ones of different people are near orthogonal.
  labels = faces.labels[train_idx]
  others = labels[:, None] != labels[None, :]
  assert (descriptors @ descriptors.T)[others].mean() > 0.7
  assert abs((expected @ expected.T)[others].mean()) < 0.05
