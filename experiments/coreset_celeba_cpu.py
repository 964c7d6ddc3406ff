"""FaceCoresetNet on real aligned CelebA faces, small scale, CPU; and set vs single-image enrolment.

Needs experiments/seesaw_celeba_cpu.py (the backbone: runs/seesaw_celeba_cpu) and, for the enrolment
comparison, experiments/hyper_celeba_cpu.py (runs/hyper_celeba_cpu) run first. Reuses the backbone's split:
the 60 test identities are unseen by the backbone, the aggregator and the hypernetwork; 15% of the training
identities are held out for model selection.
Run:      python experiments/coreset_celeba_cpu.py
Runtime:  about 5 minutes on 2 CPU cores (after the backbone and hypernetwork runs).
Protocol: 4 disjoint random templates (1-8 images) per test identity, all template pairs; TAR@FAR of
          coreset vs mean pooling vs norm-weighted pooling on the same features. Enrolment: 5 images vs 1.
"""

import sys

from fvjax.train import coreset


def get_config():
  c = coreset.default_config()
  c.backbone = 'runs/seesaw_celeba_cpu'  # its data and split; on the pretrained model: *_pretrained_cpu.py
  c.hyper_workdir = 'runs/hyper_celeba_cpu'
  c.sets_per_batch = 32
  c.max_set_size = 20
  c.optimizer.learning_rate = 1e-3  # the paper's 1e-4 is for 10,000 identities x many epochs
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 50
  c.total_steps = 1000
  c.eval_every = 250
  c.checkpoint_every = 250
  c.log_every = 50
  return c


if __name__ == '__main__':
  from fvjax.cli import main
  main(['coreset', '--config', __file__, '--workdir', 'runs/coreset_celeba_cpu', *sys.argv[1:]])
