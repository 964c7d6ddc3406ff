"""SeesawFaceNet (shuffle) distilled from the pretrained dlib_resnet teacher on MS1MV2, for an accelerator.

The recipe of experiments/seesaw_distill_celeba_cpu.py (128-d student, loss 1 - cos against the teacher's centred
descriptors, no margin head, AdamW) on the paper's training images: distillation needs no labels, so every MS1MV2
image is a target. The teacher's features of all 5.8M images (and mirrors) are computed once and memory-mapped
(6 GB of float32).
Run:      fvjax train --config experiments/seesaw_distill_ms1mv2.py --workdir runs/seesaw_distill_ms1mv2
          (--set dtype=bfloat16 on GPU/TPU; --distributed on several hosts)
Data:     $FVJAX_DATA_DIR/faces_emore/{train.rec,train.idx,lfw.bin,cfp_fp.bin,agedb_30.bin}.
Compare:  experiments/seesaw_ms1mv2.py (the paper's ArcFace recipe, 16 epochs: LFW 99.60-99.70 for seesaw_shuffle).
Not run:  needs MS1MV2, not included.
"""

from pathlib import Path

from fvjax import cli


def get_config():
  c = cli.load_config(Path(__file__).with_name('seesaw_distill_celeba_cpu.py'))  # the distillation recipe
  paper = cli.load_config(Path(__file__).with_name('seesaw_ms1mv2.py'))  # the data, batch and evaluation sets
  for field in ('data_dir', 'test_fraction', 'eval_bins', 'batch_size', 'checkpoint_every', 'log_every'):
    c[field] = paper[field]
  c.total_steps = 4 * (5_822_653 // c.batch_size)  # 4 epochs: each image's target is fixed, no classes to separate
  c.optimizer.warmup_steps = 2000
  return c
