"""Orbax checkpoints that resume exactly: train state + JSON metadata per step.

Orbax writes each step into a temporary directory and renames it when
complete, so a save interrupted by a kill never becomes the latest step. A
finalised checkpoint that is later damaged (truncated, edited, files deleted):
- resuming (`resume`) moves it to `<workdir>/damaged_checkpoints/` with a
  one-line warning and resumes from the newest intact step; when no step is
  intact it raises `CheckpointError` naming the directory, never a silent fresh
  start;
- loading a finished run (`load_run`) restores exactly the step its report.json
  describes, or raises `CheckpointError` naming both steps.

A run that validates while it trains also keeps its best-on-validation step in
`<workdir>/best_checkpoint/` (one step, beside the latest ones in
`<workdir>/checkpoints/`); a report may describe either.
"""

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


CHECKPOINTS, BEST_CHECKPOINT = 'checkpoints', 'best_checkpoint'


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored; the message names its directory."""


def manager(directory: str | os.PathLike, keep: int = 3, save_every: int = 1) -> ocp.CheckpointManager:
  """A CheckpointManager keeping the latest `keep` steps, saving every `save_every` steps."""
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every,
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=False,
  )
  return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: dict, force: bool = False) -> bool:
  """Saves `state` (a pytree) and `meta` (JSON-able) at `step`; returns whether it saved."""
  return mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                  force=force)


def restore(mgr: ocp.CheckpointManager, abstract_state: Any = None,
            step: int | None = None) -> tuple[Any, dict, int] | None:
  """Restores (state, meta, step) of `step` (default: the latest), or None when there is none.

  `abstract_state` gives structure, shapes, dtypes and shardings
  (e.g. `jax.eval_shape` output with `.sharding` set, or concrete arrays); without
  it the state comes back as saved, a nested dict of NumPy arrays (for loading a
  finished run whose Python structure the caller does not rebuild), whatever
  devices it was saved from: a run trained on 8 GPUs loads on a laptop.
  """
  step = mgr.latest_step() if step is None else step
  if step is None:
    return None
  where = Path(mgr.directory) / str(step)
  try:
    if abstract_state is None:
      saved = ocp.StandardCheckpointHandler().metadata(where / 'state').tree
      as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved)
      state_args = ocp.args.PyTreeRestore(restore_args=as_numpy)
    else:
      state_args = ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state))
    restored = mgr.restore(step, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore()))
  except Exception as e:  # orbax / tensorstore raise many types on damaged files
    others = [s for s in mgr.all_steps() if s != step]
    hint = f'; other steps present: {others}' if others else ''
    raise CheckpointError(f'checkpoint {where} is damaged or incompatible and cannot be restored '
                          f'({type(e).__name__}: {e}){hint}. Delete it to resume from an earlier step.') from e
  return restored['state'], restored['meta'], step


def _read_meta(mgr: ocp.CheckpointManager, step: int) -> dict:
  return mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


def resume(mgr: ocp.CheckpointManager, abstract_state: Any, run_meta: dict) -> tuple[Any, dict, int] | None:
  """(state, meta, step) of the newest intact checkpoint of a run described by `run_meta`, or None when there is none.

  A newer step that cannot be restored is moved to `<workdir>/damaged_checkpoints/<step>` (kept for inspection, out
  of the manager's way) with a one-line warning on stderr. Raises CheckpointError when the checkpoints are of a
  different run (their saved run config differs), or when no step is intact (then nothing is moved).
  """
  damaged = []
  for step in sorted(mgr.all_steps(), reverse=True):
    try:
      saved_run = _read_meta(mgr, step).get('run')
    except Exception:  # unreadable metadata: a damaged step
      damaged.append(step)
      continue
    if saved_run != run_meta:
      raise CheckpointError(f'{Path(mgr.directory).parent} holds checkpoints of a different run (its config differs '
                            f'in {_differing_keys(saved_run or {}, run_meta)}); use a new workdir')
    try:
      restored = restore(mgr, abstract_state, step)
    except CheckpointError:
      damaged.append(step)
      continue
    _set_aside(mgr, damaged, step)
    return restored
  if damaged:
    restore(mgr, abstract_state, damaged[0])  # raises CheckpointError naming the newest
  return None


def _set_aside(mgr: ocp.CheckpointManager, steps: list[int], resumed_from: int) -> None:
  """Moves damaged steps out of the checkpoint directory (process 0 on a shared filesystem), warning once each."""
  if not steps:
    return
  aside = Path(mgr.directory).parent / 'damaged_checkpoints'
  for step in steps:
    source, target = Path(mgr.directory) / str(step), aside / str(step)
    if jax.process_index() == 0:
      aside.mkdir(exist_ok=True)
      shutil.rmtree(target, ignore_errors=True)
      shutil.move(str(source), str(target))
      print(f'fvjax: warning: checkpoint {source} is damaged; moved to {target}, resuming from step {resumed_from}',
            file=sys.stderr)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices('fvjax checkpoint set aside')
  mgr.reload()


def _differing_keys(saved: dict, current: dict, prefix: str = '') -> str:
  """The dotted config keys whose values differ between two nested dicts, e.g. 'lr, optimizer.name'."""
  keys = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key, '<absent>'), current.get(key, '<absent>')
    if isinstance(a, dict) and isinstance(b, dict):
      keys += [k for k in _differing_keys(a, b, f'{prefix}{key}.').split(', ') if k]
    elif a != b:
      keys.append(f'{prefix}{key}')
  return ', '.join(keys)


def described_step(workdir: str | os.PathLike) -> int | None:
  """The checkpoint step a finished run's report.json describes (its 'steps'), or None without a report."""
  report = Path(workdir) / 'report.json'
  if not report.is_file():
    return None
  steps = json.loads(report.read_text()).get('steps')
  return None if steps is None else int(steps)


def _finished_step(workdir: Path) -> tuple[ocp.CheckpointManager, int] | None:
  """(manager, step) to load from a run: the step its report describes, from the latest checkpoints or the
  best-on-validation one (refusing when it is in neither), else the latest step; None without checkpoints."""
  directory = workdir / CHECKPOINTS
  if not directory.is_dir():
    return None
  latest = manager(directory)
  step = described_step(workdir)
  if step is None:
    return (latest, latest.latest_step()) if latest.latest_step() is not None else None
  if step in latest.all_steps():
    return latest, step
  if (workdir / BEST_CHECKPOINT).is_dir() and step in (best := manager(workdir / BEST_CHECKPOINT)).all_steps():
    return best, step
  raise CheckpointError(f'{workdir / "report.json"} describes step {step}, but its checkpoint is gone (newest '
                        f'step: {latest.latest_step()}); rerun the training command to redo it')


def load_run_config(workdir: str | os.PathLike) -> tuple[dict, int]:
  """(run config dict, step) of a `fvjax` workdir (the step its report describes, else the latest), without
  restoring its state."""
  found = _finished_step(Path(workdir))
  if found is None:
    raise FileNotFoundError(f'no checkpoints under {Path(workdir) / CHECKPOINTS}')
  mgr, step = found
  return _read_meta(mgr, step)['run'], step


def load_run(workdir: str | os.PathLike, command: str | None = None, field: str | None = None) -> tuple[dict, dict]:
  """(state as saved, run config dict) of a finished `fvjax` workdir: exactly the step its report.json describes
  (CheckpointError naming both steps when that checkpoint is gone), or the latest step of a run without a report.

  command, field: the run must be one of `fvjax <command>`, whose configs have `field`; another trainer's run is a
  CheckpointError saying so (rather than a missing config key deep in the caller).
  """
  found = _finished_step(Path(workdir))
  if found is None:
    raise FileNotFoundError(f'no checkpoints under {Path(workdir) / CHECKPOINTS}')
  mgr, step = found
  state, meta, _ = restore(mgr, step=step)
  if field is not None and field not in meta['run']:
    raise CheckpointError(f'{workdir} is not a `fvjax {command}` run: its checkpoints were written by another command')
  return state, meta['run']
