"""The chosen verifiers used as a researcher would, through `fvjax.verifiers`, on held-out CelebA pairs.

Loads the finished run of experiments/hyper_celeba_pretrained_cpu.py, draws the same 3,000 balanced pairs of its 60
held-out people as its report, and for each order enrols one image of each pair from its decoded JPEG
(`gen.enroll`: the backbone embeds it, the generator emits theta) and scores the other (`gen.score_pairs`). The
printed figures should equal the report's (which scores cached features of the same images) within float noise.
Run:      python experiments/verifiers_api_celeba_pretrained_cpu.py   (after experiments/hyper_celeba_pretrained_cpu.py)
Runtime:  about 5 minutes on 2 CPU cores (12,000 enrolments and probes through dlib_resnet and f).
"""

import json
import sys
from pathlib import Path


from fvjax import data, verifiers
from fvjax.eval import verification

WORKDIR = Path('runs/hyper_celeba_pretrained_cpu')


def main(workdir: Path = WORKDIR) -> None:
  gen = verifiers.load(workdir)
  c = gen.config
  faces = data.load_faces(c.data_dir, align=c.align)
  _, test_idx = data.split_identities(faces.labels, c.test_fraction, c.split_seed)
  pairs, issame = verification.make_pairs(faces.labels[test_idx], c.eval_pairs, c.seed)
  images = data.decode_all(faces, test_idx[pairs].ravel()).reshape(len(pairs), 2, 112, 112, 3)
  report = json.loads((workdir / 'report.json').read_text())['verification']['held_out_identities']
  print(f"{'order':<24}{'API: accuracy':>16}{'AUC':>8}{'report: accuracy':>19}{'AUC':>8}")
  for name, (first, second) in {'verifier_enrol_first': (0, 1), 'verifier_enrol_second': (1, 0)}.items():
    logits = gen.score_pairs(gen.enroll(images[:, first]), images[:, second])
    api, stored = verification.verification_report(logits, issame), report[name]
    print(f"{name:<24}{100 * api['accuracy']:>10.2f} ±{100 * api['accuracy_std']:<4.1f}{api['auc']:>8.3f}"
          f"{100 * stored['accuracy']:>13.2f} ±{100 * stored['accuracy_std']:<4.1f}{stored['auc']:>8.3f}")
  print(f'{len(pairs):,} held-out pairs of {workdir}. Reproduce: python {" ".join(sys.argv)}')


if __name__ == '__main__':
  main()
