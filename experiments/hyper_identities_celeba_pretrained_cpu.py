"""Hypernetwork verifiers vs the number of people the generator trains on (pretrained dlib_resnet h_bb, CPU).

The verifiers fit the people they were trained on far better than new ones (experiments/README.md): does the gap
close with more training identities, the lever the paper pulls with MS1MV2's 85k? Each row is
experiments/hyper_paper_celeba_pretrained_cpu.py at 1,000 steps (objectives switched at step 500) with the generator
trained on 25, 80 or all 162 of its training identities (nested seeded samples; the same 18 calibration and 60
held-out identities, the same 3,000 held-out CelebA pairs; KCS clusters scaled with the identities, one cluster
at 25, where a batch of 16 holds most of them anyway). The table is the ablation's, with the AUC on pairs of
the generator's own training people last.
Run:      python experiments/hyper_identities_celeba_pretrained_cpu.py      (finished rows are read back, not rerun)
Runtime:  about 30 minutes on 2 CPU cores (3 rows of about 10 minutes; dlib_resnet's features are cached).
"""

import sys
from pathlib import Path

from fvjax import cli

ABLATION = cli.load_experiment(Path(__file__).with_name('hyper_ablation_celeba_pretrained_cpu.py'))
WORKDIR = Path('runs/hyper_identities_celeba_pretrained_cpu')
STEPS = 1000
# num_clusters follows the identities (about 27 a cluster, as 162 / 6), so that KCS batches of 16 users exist.
VARIANTS = (
    ('25 training identities', {'max_train_identities': 25, 'num_clusters': 1}),
    ('80 training identities', {'max_train_identities': 80, 'num_clusters': 3}),
    ('162 training identities (all)', {}),
)


def get_config():
  c = ABLATION.get_config()
  c.total_steps = c.checkpoint_every = STEPS
  c.kcs_start = c.norm_penalty_start = STEPS // 2
  return c


if __name__ == '__main__':
  ABLATION.main(cli.load_config(__file__, sys.argv[1:]), VARIANTS, WORKDIR)
