"""FaceCoresetNet on the pretrained dlib_resnet backbone's raw features, real faces, CPU; set vs single enrolment.

Same data, identity split, templates and training as experiments/coreset_celeba_cpu.py (the from-scratch backbone),
on dlib_resnet's 128-d descriptors; the enrolment comparison uses experiments/hyper_celeba_pretrained_cpu.py
(run it first: runs/hyper_celeba_pretrained_cpu).
Run:      python experiments/coreset_celeba_pretrained_cpu.py
Protocol: 4 disjoint random templates (1-8 images) per held-out identity, all template pairs; TAR@FAR of coreset
          vs mean pooling vs norm-weighted pooling on the same features. Enrolment: 5 images vs 1.
Runtime:  about 10 minutes on 2 CPU cores (after the hypernetwork run, whose features it reuses).
"""

import sys
from pathlib import Path

from fvjax import cli
from fvjax.data import dataset_path


def get_config():
  c = cli.load_config(Path(__file__).with_name('coreset_celeba_cpu.py'))  # its training, templates and enrolment
  c.backbone = 'pretrained:dlib_resnet'
  c.data_dir = dataset_path('celeba_aligned')
  c.test_fraction = 0.25  # the split of experiments/seesaw_celeba_cpu.py
  c.split_seed = 0
  c.hyper_workdir = 'runs/hyper_celeba_pretrained_cpu'
  return c


if __name__ == '__main__':
  cli.main(['coreset', '--config', __file__, '--workdir', 'runs/coreset_celeba_pretrained_cpu', *sys.argv[1:]])
