"""FaceCoresetNet on mixed-quality templates, with the feature norm or a learned quality head as quality, CPU.

The pretrained dlib_resnet's norms carry no quality (experiments/norm_quality_celeba_cpu.py), and clean CelebA
templates leave nothing to select (mean pooling is near perfect). Here 30% of every training set's members are
strongly degraded copies (blur, low resolution, occlusion, JPEG; seeded), and the held-out templates are tested
clean and with 25% / 50% of their members degraded (`fvjax.eval.set_quality`); and on CFP's 500 people, templates of
frontal faces against the same templates with half their members swapped for profiles.
Run:      python experiments/set_quality_celeba_cpu.py [KEY=VALUE ...]   (config overrides)
          python experiments/set_quality_celeba_cpu.py coreset.backbone=runs/seesaw_adaface_celeba_cpu
          (after experiments/seesaw_adaface_celeba_cpu.py: the same table on a backbone trained with AdaFace)
Data:     $FVJAX_DATA_DIR/celeba_aligned, the split of experiments/coreset_celeba_pretrained_cpu.py (60 test
          identities; 15% of the 180 training identities validate); $FVJAX_DATA_DIR/cfp_aligned (evaluation only).
Protocol: 4 disjoint random templates (1-8 images) per test identity, all template pairs, 3 protocol seeds (the
          templates and which members are degraded): TAR@FAR mean ± std over the seeds.
Runtime:  about 20 minutes on 2 CPU cores (degraded features of 4.8k images once, two aggregators).
"""

import sys
from pathlib import Path

import ml_collections

from fvjax import cli
from fvjax.data import dataset_path
from fvjax.eval import set_quality


def get_config():
  c = ml_collections.ConfigDict()
  c.coreset = cli.load_config(Path(__file__).with_name('coreset_celeba_pretrained_cpu.py'))
  c.coreset.hyper_workdir = ''  # no enrolment comparison here
  c.coreset.degraded_share = 0.3
  c.shares = (0.0, 0.25, 0.5)
  c.protocol_seeds = (1, 2, 3)
  c.pose_dir = dataset_path('cfp_aligned')  # pose: CFP's frontal and profile faces (evaluation only); '' skips it
  c.pose_template_size = 4  # 2 templates per person of 4 frontals, or 2 frontals + 2 profiles
  return c


if __name__ == '__main__':
  config = cli.load_config(__file__, sys.argv[1:])
  workdir = Path('runs/set_quality_celeba_cpu') / Path(config.coreset.backbone.removeprefix('pretrained:')).name
  print(set_quality.format_table(set_quality.run(config, workdir)))
