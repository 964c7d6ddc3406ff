"""SeesawFaceNet (shuffle) trained with AdaFace on real aligned CelebA faces, small scale, CPU: a backbone whose
feature norm is meant to carry image quality (FaceCoresetNet reads it).

AdaFace (arXiv 2204.00964) adapts the margin to the feature norm, and its authors train with rescaling augmentation
(a face down-sampled and back) so that low-quality faces exist in training and get small norms. Same data, split,
steps and optimizer as experiments/seesaw_celeba_cpu.py; AdaFace margin instead of CosFace (s=32 as there: s=64
does not converge in a few CPU epochs), and 20% of the training faces rescaled by a factor U[1, 5].
Run:      python experiments/seesaw_adaface_celeba_cpu.py
Then:     python experiments/norm_quality_celeba_cpu.py   (its norm-vs-damage correlation beside the others)
Runtime:  about 15 minutes on 2 CPU cores.
"""

import sys
from pathlib import Path

from fvjax import cli


def get_config():
  c = cli.load_config(Path(__file__).with_name('seesaw_celeba_cpu.py'))
  c.margin.kind = 'adaface'
  c.margin.s = 32.0
  c.margin.m = 0.4  # AdaFace's published margin
  c.augment.low_resolution = 0.2
  return c


if __name__ == '__main__':
  cli.main(['train', '--config', __file__, '--workdir', 'runs/seesaw_adaface_celeba_cpu', *sys.argv[1:]])
