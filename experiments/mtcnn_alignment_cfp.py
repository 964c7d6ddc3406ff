"""Aligning raw CFP photos with fvjax's MTCNN: the reference pipeline against the photo zero-padded first.

Run:      python experiments/mtcnn_alignment_cfp.py
Data:     ../shared/models/mtcnn/oracle/images (200 raw CFP photos, frontal and profile, 42-2,381 px a side) and, for
          each, the insightface crop of the same photo in $FVJAX_DATA_DIR/cfp_aligned (made by facenet-pytorch's MTCNN
          on the photo zero-padded by 30% of its longer side: an alignment fvjax did not make).
Rows:     MTCNN as the reference runs it (edge_padding 0: a box past the photo's edge is clipped and its crop
          stretched) and with edge_padding 0.3 (fvjax.align's default); the face nearest the photo's centre.
Columns:  how far the five landmarks move between the two (pixels, and as a share of the eye distance); the
          dlib_resnet cosine between each crop and cfp_aligned's crop of the same photo (median, 5th percentile,
          share under 0.9); verification on all pairs of the 200 crops (AUC, TAR at FAR 1e-2; 32 genuine pairs of the
          24 people with two or more photos, 19,868 impostor pairs).
Runtime:  about a minute on 2 CPU cores.
"""

import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from fvjax import align, detection, pretrained
from fvjax.data import dataset_path
from fvjax.eval import verification

PHOTOS = Path(__file__).resolve().parents[2] / 'shared' / 'models' / 'mtcnn' / 'oracle' / 'images'
PADDINGS = (0.0, align.EDGE_PADDING)


def aligned_crops(photo: np.ndarray, edge_padding: float) -> tuple[np.ndarray, np.ndarray] | None:
  """(landmarks [5, 2], crop [112, 112, 3]) of the face nearest the centre, or None when no face is found."""
  faces = detection.detect(photo, detection.DetectorConfig(edge_padding=edge_padding))
  if not len(faces.boxes):
    return None
  landmarks = faces.landmarks[align._pick(faces.boxes, photo.shape[:2], 'centre')]
  return landmarks, align.crop_from_landmarks(photo, landmarks)


def main():
  paths = sorted(PHOTOS.glob('*.jpg'))
  cfp = Path(dataset_path('cfp_aligned'))
  references = np.stack([np.asarray(Image.open(cfp / p.stem.split('_')[0] / ('_'.join(p.stem.split('_')[1:])
                                                                              + '.jpg')).convert('RGB'))
                         for p in paths])
  identities = np.array([p.stem.split('_')[0] for p in paths])
  model = pretrained.load('dlib_resnet')
  reference_embeddings = model.embed(references)
  pairs = np.array(list(itertools.combinations(range(len(paths)), 2)))
  issame = identities[pairs[:, 0]] == identities[pairs[:, 1]]

  results = {}
  for padding in PADDINGS:
    found = [aligned_crops(np.asarray(Image.open(p).convert('RGB')), padding) for p in paths]
    missing = [p.name for p, f in zip(paths, found) if f is None]
    crops = np.stack([f[1] if f else np.zeros((112, 112, 3), np.uint8) for f in found])
    embeddings = model.embed(crops)
    results[padding] = {'landmarks': [f[0] if f else None for f in found], 'missing': missing,
                        'cosine': (embeddings * reference_embeddings).sum(1),
                        'scores': verification.pair_scores(embeddings, pairs)}

  plain, padded = (results[p] for p in PADDINGS)
  both = [i for i in range(len(paths)) if plain['landmarks'][i] is not None and padded['landmarks'][i] is not None]
  shift = np.array([np.linalg.norm(plain['landmarks'][i] - padded['landmarks'][i], axis=1).mean() for i in both])
  eyes = np.array([np.linalg.norm(padded['landmarks'][i][1] - padded['landmarks'][i][0]) for i in both])
  print(f'landmark shift, reference -> padded, mean over the 5 points, {len(both)} photos with a face both ways:')
  print(f'  median {np.median(shift):.2f} px, 90th percentile {np.percentile(shift, 90):.1f} px, max {shift.max():.1f}'
        f' px; over 10% of the eye distance on {int((shift > 0.1 * eyes).sum())} photos\n')
  print('| MTCNN | no face | cosine to cfp_aligned: median | 5th pct | < 0.9 | AUC | TAR@FAR 1e-2 |')
  print('|---|---|---|---|---|---|---|')
  for padding, result in results.items():
    cosine = result['cosine'][[i for i in range(len(paths)) if paths[i].name not in result['missing']]]
    report = verification.verification_report(result['scores'], issame, fars=(1e-2,))
    name = 'reference (no padding)' if padding == 0 else f'edge_padding {padding}'
    print(f"| {name} | {len(result['missing'])} | {np.median(cosine):.4f} | {np.percentile(cosine, 5):.4f} | "
          f"{int((cosine < 0.9).sum())} | {report['auc']:.4f} | {100 * report['tar_at_far']['0.01']:.1f}% |")


if __name__ == '__main__':
  main()
