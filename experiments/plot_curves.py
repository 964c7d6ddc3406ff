"""Training and validation curves of one or more workdirs, from their TensorBoard events, as one PNG.

Run:  python experiments/plot_curves.py runs/demo/hyper runs/demo/coreset --out docs/demo_curves.png
Each panel is one scalar ('train/loss', 'train/learning_rate', 'validation/auc', ...), one line per workdir that
logged it (`fvjax.train.run_log.read_scalars`). The same curves, live: `tensorboard --logdir runs/`.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from fvjax.train import run_log  # noqa: E402

DEFAULT_TAGS = ('train/loss', 'train/learning_rate', 'train/images_per_s', 'validation/auc')


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('workdirs', nargs='+', type=Path)
  parser.add_argument('--tags', nargs='+', default=DEFAULT_TAGS)
  parser.add_argument('--out', type=Path, required=True)
  args = parser.parse_args()
  runs = {w.name: run_log.read_scalars(w / run_log.TENSORBOARD_DIR) for w in args.workdirs}
  tags = [t for t in args.tags if any(t in scalars for scalars in runs.values())]
  if not tags:
    raise SystemExit(f'none of {args.tags} was logged under {[str(w) for w in args.workdirs]}')
  figure, axes = plt.subplots(1, len(tags), figsize=(4 * len(tags), 3.2), squeeze=False)
  for axis, tag in zip(axes[0], tags):
    for colour, (name, scalars) in enumerate(runs.items()):  # one colour per workdir in every panel
      if tag in scalars:
        steps = sorted(scalars[tag])
        axis.plot(steps, [scalars[tag][s] for s in steps], marker='.' if len(steps) < 20 else None, label=name,
                  color=f'C{colour}')
    axis.set_title(tag)
    axis.set_xlabel('step')
  axes[0][0].legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(args.out, dpi=110)
  print(f'wrote {args.out}: {", ".join(tags)}')


if __name__ == '__main__':
  main()
