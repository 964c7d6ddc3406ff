"""What a training run records as it goes: `metrics.jsonl` and TensorBoard event files, side by side in its workdir.

`metrics.jsonl` holds one JSON line per logged training step; `<workdir>/tensorboard/<stream>/` holds TensorBoard
events (`tensorboard --logdir runs/` shows every run), written by tensorboardX, which needs no TensorFlow: stream
'train' the same scalars as metrics.jsonl ('train/loss', 'train/learning_rate', 'train/images_per_s', ...), stream
'validation' what a trainer measures on its validation people. A resumed run purges the events of the steps it
redoes, so curves never double back. Only process 0 writes. `read_scalars` reads the events back (for plots and
comparisons without TensorBoard).
"""

import json
import math
from pathlib import Path

import jax
import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2

TENSORBOARD_DIR = 'tensorboard'


class RunLog:
  """Appends logged steps of one run to its workdir (a no-op on processes other than 0)."""

  def __init__(self, workdir: str | Path, first_step: int = 1, stream: str = 'train'):
    """first_step: the first step this call will log (this stream's events of later steps from before are purged);
    stream: 'train' (also written to metrics.jsonl) or 'validation'."""
    self.lead, self.stream = jax.process_index() == 0, stream
    workdir = Path(workdir)
    self._jsonl = (workdir / 'metrics.jsonl').open('a') if self.lead and stream == 'train' else None
    self._events = (SummaryWriter(str(workdir / TENSORBOARD_DIR / stream), purge_step=first_step)
                    if self.lead else None)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """One logged step: a metrics.jsonl line (stream 'train') and one event per finite scalar, '<stream>/<name>'."""
    if not self.lead:
      return
    if self._jsonl is not None:
      self._jsonl.write(json.dumps({'step': step, **scalars}) + '\n')
      self._jsonl.flush()
    for name, value in scalars.items():
      if math.isfinite(value):  # a TAR at a FAR below 1/#impostors is NaN: no point on the curve
        self._events.add_scalar(f'{self.stream}/{name}', value, step)
    self._events.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._events is not None:
      self._events.close()

  def __enter__(self) -> 'RunLog':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_scalars(folder: str | Path) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of every event file under `folder` (a workdir, or its tensorboard/<stream>). Each folder
  of event files is one TensorBoard run, read in file order with TensorBoard's purge rule: a session start at step
  s (a resumed run) drops what that run logged at steps >= s. Event files are TFRecord frames: an 8-byte length,
  its 4-byte CRC, the Event proto, the proto's 4-byte CRC."""
  runs = {}
  for path in sorted(Path(folder).rglob('events.out.tfevents.*'), key=lambda p: p.stat().st_mtime):
    runs.setdefault(path.parent, []).append(path)
  scalars = {}
  for paths in runs.values():
    scalars.update(_read_run(paths))
  return scalars


def _read_run(paths: list[Path]) -> dict[str, dict[int, float]]:
  scalars = {}
  for path in paths:
    data, offset = path.read_bytes(), 0
    while offset + 12 <= len(data):
      length = int(np.frombuffer(data[offset:offset + 8], '<u8')[0])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      if event.HasField('session_log') and event.session_log.status == event_pb2.SessionLog.START:
        scalars = {tag: {k: v for k, v in steps.items() if k < event.step} for tag, steps in scalars.items()}
      for value in event.summary.value:
        scalars.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
  return scalars
