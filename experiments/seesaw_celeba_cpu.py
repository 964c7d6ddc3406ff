"""SeesawFaceNet (shuffle) on real aligned CelebA faces, small scale, CPU.

Run:      python experiments/seesaw_celeba_cpu.py      (or: fvjax train --config experiments/seesaw_celeba_cpu.py --workdir runs/seesaw_celeba_cpu)
Data:     $FVJAX_DATA_DIR/celeba_aligned (240 identities, 4.8k insightface-aligned 112x112 crops).
Protocol: 25% of identities (60) held out; 3,000 balanced pairs among them, 10-fold accuracy, flip TTA.
Runtime:  about 15 minutes on 2 CPU cores. Measured result: see experiments/README.md.
"""

import sys

from fvjax.data import dataset_path
from fvjax.train import recognition


def get_config():
  c = recognition.default_config()
  c.data_dir = dataset_path('celeba_aligned')
  c.backbone = 'seesaw_shuffle'
  c.test_fraction = 0.25
  c.batch_size = 64
  c.total_steps = 150
  c.margin.kind = 'cosface'  # ArcFace s=64 m=0.5 does not converge in a few CPU epochs on 180 identities
  c.margin.s = 32.0
  c.margin.m = 0.25
  c.augment.flip = 0.5
  c.optimizer.learning_rate = 0.1
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 20
  c.checkpoint_every = 50
  c.log_every = 10
  c.eval_pairs = 3000
  return c


if __name__ == '__main__':
  from fvjax.cli import main
  main(['train', '--config', __file__, '--workdir', 'runs/seesaw_celeba_cpu', *sys.argv[1:]])
