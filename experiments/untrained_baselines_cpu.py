"""What a verifier must beat before training: raw pixels and an untrained f, on the held-out pairs of two runs.

For the demo's hyper stage (AT&T faces, 10 held-out people, 1,000 pairs) and experiments/hyper_celeba_pretrained_cpu.py
(60 held-out CelebA people, 3,000 pairs), the same pairs as their reports are scored by
- the cosine of f's inputs (64x64, in [-1, 1]), each image's mean subtracted: no learning at all;
- the cosine of the pooled, L2-normalised features of an f that was never trained (`verifier.init_theta`, He-initialised
  convolutions, depthwise pooling that starts as the mean), three seeds;
- the backbone's cosine (dlib_resnet), the ceiling.
Run:      python experiments/untrained_baselines_cpu.py
Runtime:  about 2 minutes on 2 CPU cores (the backbone's features are cached by the runs).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fvjax import backbones, cli, data, demo
from fvjax.eval import verification
from fvjax.models import verifier
from fvjax.models.layers import l2_normalize
from fvjax.train import features as features_lib
from fvjax.train import hyper, hyper_eval

UNTRAINED_SEEDS = (0, 1, 2)


def pair_cosines(rows: np.ndarray) -> np.ndarray:
  """Cosine [P] of rows 2i and 2i + 1 of [2P, ...] (each flattened), scored as `verification.pair_scores` scores."""
  flat = np.asarray(l2_normalize(jnp.asarray(rows.reshape(len(rows), -1))))
  return verification.pair_scores(flat, np.arange(len(rows)).reshape(-1, 2))


def centred(x: np.ndarray) -> np.ndarray:
  """Each image [P, ...] less its own mean value."""
  return x - x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)


def held_out_rows(config) -> list[tuple[str, dict]]:
  """(name, verification report) of each baseline on `config`'s held-out pairs (pairs 2i, 2i + 1)."""
  backbone = backbones.load(config.backbone)
  split = backbone.data_split(config)
  features, faces = features_lib.backbone_features(backbone, split, progress=False)
  spec = hyper.verifier_spec(config)
  _, test_idx = data.split_identities(faces.labels, split.test_fraction, split.split_seed)
  embeddings, inputs, issame = hyper_eval.identity_pairs(features, faces, test_idx, config, spec)
  rows = [('raw pixels, mean-centred', pair_cosines(centred(inputs)))]
  for seed in UNTRAINED_SEEDS:
    g = np.asarray(verifier.features(verifier.init_theta(jax.random.key(seed), spec), inputs, spec))
    rows.append((f'untrained f, seed {seed}', pair_cosines(g)))
  rows.append(('backbone cosine', pair_cosines(embeddings)))
  return [(name, verification.verification_report(scores, issame)) for name, scores in rows]


def main() -> None:
  runs = {'demo (AT&T)': demo.configs(cli.DEMO_DATA, Path('runs/demo'), backbone_steps=0)['hyper'],
          'held-out CelebA': cli.load_config(Path(__file__).with_name('hyper_celeba_pretrained_cpu.py'))}
  print(f"{'pairs of':<18}{'scores':<28}{'accuracy':>14}{'AUC':>8}")
  for run_name, config in runs.items():
    for name, report in held_out_rows(config):
      print(f"{run_name:<18}{name:<28}{100 * report['accuracy']:>8.2f} ±{100 * report['accuracy_std']:<4.1f}"
            f"{report['auc']:>8.3f}", flush=True)


if __name__ == '__main__':
  main()
