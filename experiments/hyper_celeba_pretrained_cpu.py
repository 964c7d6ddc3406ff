"""Hypernetwork personalised verifiers on the pretrained dlib_resnet backbone (frozen h_bb), real faces, CPU.

The generator reads dlib_resnet's 128-d descriptors; f stays the 23,617-parameter image network. Same data, identity
split and schedule as experiments/hyper_celeba_cpu.py (which uses the from-scratch seesaw_shuffle), so the two
tables compare backbones; LFW's 6,000 standard pairs are scored too (never trained on).
Run:      python experiments/hyper_celeba_pretrained_cpu.py
Data:     $FVJAX_DATA_DIR/celeba_aligned (180 training / 60 held-out identities), $FVJAX_DATA_DIR/lfw_aligned.
Protocol: 3,000 balanced pairs of held-out CelebA identities and LFW's pairs: enrol one image, probe the other, both
          orders; baseline = cosine of the same backbone's (flip-averaged) descriptors on the same pairs.
Runtime:  about 25 minutes on 2 CPU cores (features of 4.8k images once, 2,000 steps, LFW's 12,000 images).
"""

import os
import sys

from fvjax.train import hyper

DATA = os.environ.get('FVJAX_DATA_DIR', '../shared/data')


def get_config():
  c = hyper.default_config()
  c.backbone = 'pretrained:dlib_resnet'
  c.data_dir = os.path.join(DATA, 'celeba_aligned')
  c.test_fraction = 0.25  # the split of experiments/seesaw_celeba_cpu.py
  c.split_seed = 0
  c.total_steps = 2000
  c.users_per_batch = 16
  c.positives_per_user = 2
  c.num_clusters = 6
  c.kcs_start = 1000  # the half-way schedule of hyper_celeba_cpu.py
  c.norm_penalty_start = 1000
  c.checkpoint_every = 500
  c.eval_bins = (os.path.join(DATA, 'lfw_aligned'),)
  return c


if __name__ == '__main__':
  from fvjax.cli import main
  main(['hyper', '--config', __file__, '--workdir', 'runs/hyper_celeba_pretrained_cpu', *sys.argv[1:]])
