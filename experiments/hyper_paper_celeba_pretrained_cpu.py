"""The paper's hypernetwork verifiers on the pretrained dlib_resnet backbone (frozen h_bb), real faces, CPU.

Every weight of f is generated from the enrolment embedding and trained with the paper's objective (weighted BCE,
KCS and the norm penalty from half-way): the paper-faithful row of experiments/README.md. The chosen settings of
experiments/hyper_celeba_pretrained_cpu.py start from this config. The generator reads dlib_resnet's 128-d
descriptors; f stays the 23,617-parameter image network. Same data, identity
split and schedule as experiments/hyper_celeba_cpu.py (which uses the from-scratch seesaw_shuffle), so the two
tables compare backbones; LFW's 6,000 standard pairs are scored too (never trained on).
Run:      python experiments/hyper_paper_celeba_pretrained_cpu.py
Data:     $FVJAX_DATA_DIR/celeba_aligned (180 training / 60 held-out identities), $FVJAX_DATA_DIR/lfw_aligned.
Protocol: 3,000 balanced pairs of held-out CelebA identities and LFW's pairs: enrol one image, probe the other, both
          orders; baseline = cosine of the same backbone's (flip-averaged) descriptors on the same pairs.
Runtime:  about 25 minutes on 2 CPU cores (features of 4.8k images once, 2,000 steps, LFW's 12,000 images).
"""

import sys
from pathlib import Path

from fvjax import cli
from fvjax.data import dataset_path



def get_config():
  c = cli.load_config(Path(__file__).with_name('hyper_celeba_cpu.py'))  # its sizes and half-way schedule
  c.backbone = 'pretrained:dlib_resnet'
  c.data_dir = dataset_path('celeba_aligned')
  c.test_fraction = 0.25  # the split of experiments/seesaw_celeba_cpu.py
  c.split_seed = 0
  c.eval_bins = (dataset_path('lfw_aligned'),)
  return c


if __name__ == '__main__':
  cli.main(['hyper', '--config', __file__, '--workdir', 'runs/hyper_paper_celeba_pretrained_cpu', *sys.argv[1:]])
