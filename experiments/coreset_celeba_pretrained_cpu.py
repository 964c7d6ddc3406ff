"""FaceCoresetNet on the pretrained dlib_resnet backbone's raw features, real faces, CPU; set vs single enrolment.

Same data, identity split, templates and training as experiments/coreset_celeba_cpu.py (the from-scratch backbone),
on dlib_resnet's 128-d descriptors; the enrolment comparison uses experiments/hyper_celeba_pretrained_cpu.py
(run it first: runs/hyper_celeba_pretrained_cpu).
Run:      python experiments/coreset_celeba_pretrained_cpu.py
Protocol: 4 disjoint random templates (1-8 images) per held-out identity, all template pairs; TAR@FAR of coreset
          vs mean pooling vs norm-weighted pooling on the same features. Enrolment: 5 images vs 1.
Runtime:  about 10 minutes on 2 CPU cores (after the hypernetwork run, whose features it reuses).
"""

import os
import sys

from fvjax.train import coreset


def get_config():
  c = coreset.default_config()
  c.backbone = 'pretrained:dlib_resnet'
  c.data_dir = os.path.join(os.environ.get('FVJAX_DATA_DIR', '../shared/data'), 'celeba_aligned')
  c.test_fraction = 0.25
  c.split_seed = 0
  c.hyper_workdir = 'runs/hyper_celeba_pretrained_cpu'
  c.aggregator.num_heads = 8  # 128-d features: 16 per head
  c.sets_per_batch = 32
  c.max_set_size = 20
  c.optimizer.learning_rate = 1e-3  # as coreset_celeba_cpu.py
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 50
  c.total_steps = 1000
  c.eval_every = 250
  c.checkpoint_every = 250
  c.log_every = 50
  return c


if __name__ == '__main__':
  from fvjax.cli import main
  main(['coreset', '--config', __file__, '--workdir', 'runs/coreset_celeba_pretrained_cpu', *sys.argv[1:]])
