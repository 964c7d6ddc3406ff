"""SeesawFaceNet paper recipe: MS1MV2 (insightface 'faces_emore'), ArcFace s=64 m=0.5, SGD 0.1, 16 epochs.

Run:      fvjax train --config experiments/seesaw_ms1mv2.py --workdir runs/seesaw_ms1mv2 \
            --set data_dir=/data/faces_emore/train.rec --set backbone=dw_seesaw_v2
Data:     $FVJAX_DATA_DIR/faces_emore/{train.rec,train.idx,lfw.bin,cfp_fp.bin,agedb_30.bin}.
Hardware: the reference trained on GPUs with batch 256; here the global batch is split over every device
          (and host, with --distributed). Use --set dtype=bfloat16 on GPU/TPU.
Expected (paper, 10-fold): seesaw_shuffle LFW 99.60-99.70, CFP-FP 92.03-92.90, AgeDB-30 96.30-96.85;
          dw_seesaw_v2 LFW 99.80, CFP-FP 97.24, AgeDB-30 97.55. Not run: needs MS1MV2, not included.
Reference (cvtower/seesawfacenet_pytorch src/config.py, Learner.py, train.py), followed: ArcFace s=64 m=0.5; SGD
          lr 0.1, momentum 0.9, /10 at epochs 8, 12, 14 of 16; weight decay by group (BatchNorm 0, the embedding
          Linear and the ArcFace kernel 4e-4, every other parameter 4e-5); horizontal flip only; batch 256.
Differences: the batch is config.py's 256 (train.py's command-line default is 196); the global batch is split
          over devices and hosts (BatchNorm statistics are global, as one device's); validation during training
          uses 10 folds (the reference's `evaluate` uses 5).
"""

import os

from fvjax.data import dataset_path
from fvjax.train import recognition

IMAGES = 5_822_653  # MS1MV2
BATCH = 256
STEPS_PER_EPOCH = IMAGES // BATCH


def get_config():
  root = dataset_path('faces_emore')
  c = recognition.default_config()
  c.data_dir = os.path.join(root, 'train.rec')
  c.test_fraction = 0.0  # evaluate on the standard .bin sets instead
  c.eval_bins = tuple(os.path.join(root, f'{name}.bin') for name in ('lfw', 'cfp_fp', 'agedb_30'))
  c.backbone = 'seesaw_shuffle'
  c.batch_size = BATCH
  c.total_steps = 16 * STEPS_PER_EPOCH
  c.margin.kind = 'arcface'
  c.margin.s = 64.0
  c.margin.m = 0.5
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  # The reference's parameter groups (InsightFace_Pytorch Learner, which the seesaw code trains with): BatchNorm
  # undecayed, the embedding Linear and the ArcFace kernel at 4e-4, every other parameter at 4e-5.
  c.optimizer.weight_decay_rules = (('/bn/|embedding_bn/', 0.0), ('backbone/embedding/kernel|^head/', 4e-4),
                                    ('', 4e-5))
  c.optimizer.schedule = 'piecewise'
  c.optimizer.milestones = tuple(e * STEPS_PER_EPOCH for e in (8, 12, 14))
  c.checkpoint_every = 5000
  c.log_every = 100
  return c
