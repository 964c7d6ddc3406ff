"""Orbax checkpoints that resume exactly: train state + JSON metadata per step.

Orbax writes each step into a temporary directory and renames it when
complete, so a save interrupted by a kill never becomes the latest step. A
finalised checkpoint that is later damaged (truncated, edited) raises
`CheckpointError` naming the directory, never a silent fresh start.
"""

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


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


def load_run_config(workdir: str | os.PathLike) -> tuple[dict, int]:
  """(run config dict, step) of the latest checkpoint of a `fvjax` workdir, without restoring its state."""
  directory = Path(workdir) / 'checkpoints'
  mgr = manager(directory) if directory.is_dir() else None
  step = mgr.latest_step() if mgr else None
  if step is None:
    raise FileNotFoundError(f'no checkpoint under {directory}')
  meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  return meta['run'], step


def load_run(workdir: str | os.PathLike) -> tuple[dict, dict]:
  """(state as saved, run config dict) of the latest checkpoint of a finished `fvjax` workdir."""
  directory = Path(workdir) / 'checkpoints'
  if not directory.is_dir():
    raise FileNotFoundError(f'no checkpoints under {directory}')
  restored = restore(manager(directory))
  if restored is None:
    raise FileNotFoundError(f'no checkpoint under {directory}')
  state, meta, _ = restored
  return state, meta['run']
