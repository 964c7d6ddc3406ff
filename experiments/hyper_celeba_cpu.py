"""Hypernetwork personalised verifiers on real aligned CelebA faces, small scale, CPU.

Needs the backbone of experiments/seesaw_celeba_cpu.py (run it first: runs/seesaw_celeba_cpu); reuses its
identity split, so the 60 test identities are unseen by the backbone and by the hypernetwork.
Run:      python experiments/hyper_celeba_cpu.py
Runtime:  about 9 minutes on 2 CPU cores (after the backbone run).
Protocol: 3,000 balanced pairs of held-out identities; enrol with one image, probe with the other (both
          orders reported); baseline = cosine of the same backbone's embeddings on the same pairs.
"""

import sys

from fvjax.train import hyper


def get_config():
  c = hyper.default_config()
  c.backbone = 'runs/seesaw_celeba_cpu'  # its data and split; on the pretrained model: *_pretrained_cpu.py
  c.total_steps = 2000
  c.users_per_batch = 16
  c.positives_per_user = 2
  c.num_clusters = 6
  c.kcs_start = 1000  # plain BCE on random users first: KCS + penalty from step 100 collapsed f to a constant
  c.norm_penalty_start = 1000
  c.checkpoint_every = 500
  return c


if __name__ == '__main__':
  from fvjax.cli import main
  main(['hyper', '--config', __file__, '--workdir', 'runs/hyper_celeba_cpu', *sys.argv[1:]])
