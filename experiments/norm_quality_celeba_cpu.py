"""Does the feature norm carry quality? Held-out CelebA faces blurred, downsampled and occluded on purpose, CPU.

FaceCoresetNet reads the raw feature norm as image quality (first pick, norm-weighted distances, norm encoding).
This measures, for each backbone, how the norm and the identity (cosine to the clean image's descriptor) fall as
the degradation grows, and their rank correlation over all degraded images (`fvjax.eval.quality`).
Run:      python experiments/norm_quality_celeba_cpu.py [KEY=VALUE ...]   (config overrides)
          (after experiments/seesaw_celeba_cpu.py, experiments/seesaw_distill_celeba_cpu.py and
          experiments/seesaw_adaface_celeba_cpu.py, whose backbones it reads; dlib_resnet is shipped)
Data:     $FVJAX_DATA_DIR/celeba_aligned: the 1,200 images of the 60 identities every CelebA experiment holds out.
Runtime:  about 10 minutes on 2 CPU cores.
"""

import sys

import ml_collections

from fvjax.data import dataset_path
from fvjax.eval import quality


def get_config():
  c = ml_collections.ConfigDict()
  c.data_dir = dataset_path('celeba_aligned')
  c.align = 'auto'  # the crops are 112x112 already: used as they are, as in training
  c.test_fraction = 0.25
  c.split_seed = 0
  c.backbones = ('pretrained:dlib_resnet', 'runs/seesaw_celeba_cpu', 'runs/seesaw_distill_celeba_cpu',
                 'runs/seesaw_adaface_celeba_cpu')
  return c


if __name__ == '__main__':
  from fvjax import cli
  config = cli.load_config(__file__, sys.argv[1:])
  print(quality.format_table(quality.run(config, 'runs/norm_quality_celeba_cpu')))
