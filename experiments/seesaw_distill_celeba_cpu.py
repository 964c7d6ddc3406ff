"""SeesawFaceNet (shuffle) distilled from the pretrained dlib_resnet teacher on real aligned CelebA faces, CPU.

The student (128-d, the teacher's descriptor size) learns to point its embedding of each training image along the
teacher's flip-averaged descriptor of that image: loss 1 - cos(student, teacher), no margin head. Why pure
descriptor matching: with 180 training identities, a margin softmax learns those 180 classes; the teacher's
descriptor carries the geometry it learned on millions of faces of other people, which is what has to transfer to
unseen identities. The teacher runs once (its features are cached), never in the training step.
Run:      python experiments/seesaw_distill_celeba_cpu.py
Data:     $FVJAX_DATA_DIR/celeba_aligned (the 180 training identities of experiments/seesaw_celeba_cpu.py; the other
          60 held out), $FVJAX_DATA_DIR/lfw_aligned (6,000 standard pairs; evaluation only).
Protocol: 3,000 balanced held-out CelebA pairs and LFW's pairs, 10-fold accuracy, flip TTA; the teacher's numbers on
          the same pairs are experiments/pretrained_backbone_cpu.py's.
Runtime:  under an hour on 2 CPU cores (teacher features of 4.8k images once, 700 steps of 64, LFW's 12,000 images).
          On an accelerator: experiments/seesaw_distill_celeba.py (more steps, larger batch).
"""

import sys

from fvjax.data import dataset_path
from fvjax.train import recognition


def get_config():
  c = recognition.default_config()
  c.data_dir = dataset_path('celeba_aligned')
  c.test_fraction = 0.25  # the split of experiments/seesaw_celeba_cpu.py
  c.split_seed = 0
  c.backbone = 'seesaw_shuffle'
  c.embedding_size = 128  # the teacher's
  c.teacher = 'pretrained:dlib_resnet'
  c.distill_weight = 1.0
  c.margin_weight = 0.0
  c.batch_size = 64
  c.total_steps = 700
  c.augment.flip = 0.5
  c.augment.crop_padding = 4
  c.optimizer.name = 'adamw'  # invariant to the loss's scale (1 - cos has small gradients next to a margin softmax)
  c.optimizer.learning_rate = 2e-3
  c.optimizer.weight_decay = 0.05
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 50
  c.checkpoint_every = 100
  c.log_every = 25
  c.eval_pairs = 3000
  c.eval_bins = (dataset_path('lfw_aligned'),)
  return c


if __name__ == '__main__':
  from fvjax.cli import main
  main(['train', '--config', __file__, '--workdir', 'runs/seesaw_distill_celeba_cpu', *sys.argv[1:]])
