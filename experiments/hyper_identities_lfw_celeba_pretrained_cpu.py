"""Verifiers vs the number of training people, extended tenfold with LFW's people (dlib_resnet h_bb, CPU).

The settings chosen before the linear generator (`mlp_generator_config` of experiments/hyper_celeba_pretrained_cpu.py)
at 1,000 steps, with one probe per user and 96 users a step (so that LFW's many two-image people can train; 96 x 96 scored pairs a step) and probes augmented afresh
(`probe_views=0`, as the curve was measured; `--set probe_views=8` copies LFW's images too), on CelebA's training people
plus LFW's people with at least two images, less every CFP person (`extra_train_exclude`): 1,714 people.
Each row trains on a nested seeded sample of 100 to all of them (fewer than a step's 96 users cannot fill a batch).
These runs TRAIN ON LFW and so never report it: they report the 60 held-out CelebA people (the same 3,000 pairs as
every other hypernetwork table), the 18 validation people, and CFP-FF and CFP-FP (official 10-fold protocols).
Last, a least-squares line of held-out AUC against log10(training people), and what it predicts at MS1MV2's 85,742
people (an extrapolation far outside the measured range; AUC is bounded by 1).
Run:      python experiments/hyper_identities_lfw_celeba_pretrained_cpu.py   (finished rows are read back)
Data:     $FVJAX_DATA_DIR/celeba_aligned, lfw_aligned (training only), cfp_aligned (evaluation only).
Runtime:  64 minutes on 2 CPU cores shared with other runs (LFW's and CFP's faces through dlib_resnet once,
          then 5 rows).
"""

import json
import sys
from pathlib import Path

import ml_collections
import numpy as np

from fvjax import checkpoint, cli
from fvjax.data import dataset_path
from fvjax.train import hyper

WORKDIR = Path('runs/hyper_identities_lfw_celeba_pretrained_cpu')
STEPS = 1000
IDENTITIES = (100, 200, 400, 800, 0)  # 0: all of them
MS1MV2_IDENTITIES = 85_742


def get_config():
  c = cli.load_experiment(Path(__file__).with_name('hyper_celeba_pretrained_cpu.py')).mlp_generator_config()
  c.total_steps = c.checkpoint_every = c.kcs_start = c.norm_penalty_start = STEPS
  c.positives_per_user = 1
  c.users_per_batch = 96
  c.probe_views = 0  # fresh copies, clean targets (as the curve was measured); --set probe_views=8: fixed copies
  c.extra_train_dirs = (dataset_path('lfw_aligned'),)
  c.extra_train_exclude = str(Path(dataset_path('cfp_aligned')) / 'names.txt')
  c.eval_bins = tuple(str(Path(dataset_path('cfp_aligned')) / f'pairs_{p}.txt') for p in ('FF', 'FP'))
  c.identification = False
  return c


def run_row(config, workdir: Path) -> dict:
  """The report of `config` in `workdir`: read back when that very config finished there, else trained."""
  report = workdir / 'report.json'
  if report.is_file() and checkpoint.load_run_config(workdir)[0] == json.loads(json.dumps(config.to_dict())):
    return json.loads(report.read_text())
  return hyper.run(config, workdir, progress=False)


def main(base, workdir_root: Path = WORKDIR) -> None:
  rows = []
  print(f"{'people':>7}{'held-out AUC':>14}{'acc':>13}{'val AUC':>9}{'CFP-FF acc':>15}{'AUC':>7}{'CFP-FP acc':>15}"
        f"{'AUC':>7}{'seen AUC':>10}", flush=True)
  for limit in IDENTITIES:
    config = cli.apply_overrides(ml_collections.ConfigDict(base.to_dict()), {'max_train_identities': limit})
    report = run_row(config, workdir_root / (f'identities_{limit}' if limit else 'identities_all'))
    v = report['verification']
    people = report['training_people']
    held, first = v['held_out_identities'], 'verifier_enrol_first'
    cells = [f"{people:>7,}{held[first]['auc']:>14.3f}{100 * held[first]['accuracy']:>8.2f} ±"
             f"{100 * held[first]['accuracy_std']:<3.1f}{v['validation_identities'][first]['auc']:>9.3f}"]
    for name in ('pairs_FF', 'pairs_FP'):
      cells.append(f"{100 * v[name][first]['accuracy']:>10.2f} ±{100 * v[name][first]['accuracy_std']:<3.1f}"
                   f"{v[name][first]['auc']:>7.3f}")
    print(''.join(cells) + f"{v['training_identities'][first]['auc']:>10.3f}", flush=True)
    rows.append((people, held[first]['auc']))
  people, auc = np.array(rows, float).T
  slope, intercept = np.polyfit(np.log10(people), auc, 1)
  cosine = v['held_out_identities']['embedding_cosine']
  print(f"held-out AUC ~ {intercept:.3f} + {slope:.3f} log10(people); at {MS1MV2_IDENTITIES:,} (MS1MV2): "
        f"{intercept + slope * np.log10(MS1MV2_IDENTITIES):.3f}. dlib_resnet's cosine on the same held-out pairs: "
        f"AUC {cosine['auc']:.3f}, CFP-FF {100 * v['pairs_FF']['embedding_cosine']['accuracy']:.2f}, "
        f"CFP-FP {100 * v['pairs_FP']['embedding_cosine']['accuracy']:.2f}. Enrol first; LFW is training data here. "
        f"Reproduce: python {' '.join(sys.argv)}")


if __name__ == '__main__':
  main(cli.load_config(__file__, sys.argv[1:]))
