"""One generic, jitted, data-parallel train loop with exact resume.

A method plugs in as a `Task` (init, loss, batches). The loop owns
everything else: the mesh and shardings, the optimizer update, Orbax
checkpoints, metric logs and the progress bar.

Exact resume: the step's RNG is `fold_in(key(seed), step)` and the data
stream is indexed by step (`fvjax.data.train_batches`), so the checkpointed
`step` is the whole iterator and RNG state; a run killed after a checkpoint and
resumed ends with the same parameters as an uninterrupted run.
"""

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import flax
import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from fvjax import checkpoint, parallel, progress as progress_lib
from fvjax.data.pipeline import prefetch_to_device
from fvjax.train import run_log
from fvjax.train.optim import OptimizerConfig, learning_rate_schedule, make_optimizer

Params = Any
LossFn = Callable[[Params, dict, dict, jax.Array], tuple[jax.Array, tuple[dict, dict]]]


@dataclasses.dataclass(frozen=True)
class Task:
  """What a method supplies to `train`.

  init(rng) -> variables: {'params': trainable pytree, **other collections}.
    Collections other than 'params' (BatchNorm statistics, frozen backbones)
    ride along in `TrainState.model_state` and are never touched by the optimizer.
  loss(params, model_state, batch, rng) -> (scalar loss, (new model_state, metrics dict)).
  batches(start_step) -> iterator of this host's rows of each global batch, from `start_step` on.
  """
  init: Callable[[jax.Array], dict]
  loss: LossFn
  batches: Callable[[int], Iterator[dict]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Params
  model_state: dict
  opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  total_steps: int
  seed: int = 0
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  log_every: int = 50

  def as_fields(self) -> dict:
    """The loop's fields, for a run config's top level (`train_from_config` reads them back)."""
    return dataclasses.asdict(self)


class NonFiniteLossError(FloatingPointError):
  """The loss or the gradients became NaN/inf; the message names the step (earlier checkpoints are kept)."""


def init_state(task: Task, tx: optax.GradientTransformation, seed: int, mesh) -> TrainState:
  """The step-0 state, replicated over `mesh`."""

  def make(rng):
    variables = dict(task.init(rng))
    params = variables.pop('params')
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables, opt_state=tx.init(params))

  return jax.jit(make, out_shardings=parallel.replicated(mesh))(jax.random.key(seed))


def make_train_step(task: Task, tx: optax.GradientTransformation, seed: int, mesh,
                    learning_rate_fn: optax.Schedule | None = None) -> Callable[[TrainState, dict], tuple]:
  """jit(state, global batch) -> (state, metrics); params replicated, batch split over 'data'."""
  base_key = jax.random.key(seed)

  def step_fn(state: TrainState, batch: dict):
    rng = jax.random.fold_in(base_key, state.step)
    grad_fn = jax.value_and_grad(task.loss, has_aux=True)
    (loss, (model_state, metrics)), grads = grad_fn(state.params, state.model_state, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, 'loss': loss, 'grad_norm': optax.tree.norm(grads)}
    if learning_rate_fn is not None:
      metrics['learning_rate'] = learning_rate_fn(state.step)
    return state.replace(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state), metrics

  rep, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  return jax.jit(step_fn, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=0)


def train(task: Task, tx: optax.GradientTransformation, config: LoopConfig, workdir: str | Path, *,
          run_meta: dict | None = None, learning_rate_fn: optax.Schedule | None = None, mesh=None,
          stop_at: int | None = None, progress: bool = True, stage: str = 'train',
          validate: Callable[[TrainState], dict[str, float]] | None = None, validate_every: int = 0,
          select: str | None = None) -> TrainState:
  """Trains to `config.total_steps`, resuming from the latest checkpoint in `workdir`.

  run_meta: JSON-able description of the run (its config), saved with every
    checkpoint; resuming a workdir written by a different run_meta is refused.
  stop_at: stop after this step (a pre-emption, or a time-boxed slice of a run); the
    last step of the call is always checkpointed, so the next call resumes from it.
  stage: the progress bar's name ('hyper train', 'coreset train', ...).
  validate: state -> scalars measured on validation people, run every `validate_every` steps and at the last step,
    logged as the run's 'validation' stream (TensorBoard).
  select: a scalar of `validate` to maximise: the state where it is highest (the earliest of equals) is kept in
    `workdir/best_checkpoint/` with its scalars, beside the latest checkpoints (`best_checkpoint` reads it back).
  Returns the last state. Logs metrics to `workdir/metrics.jsonl` and TensorBoard events (`run_log.RunLog`).
  """
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = mesh or parallel.data_mesh()
  run_meta = json.loads(json.dumps(run_meta or {}))
  state = init_state(task, tx, config.seed, mesh)
  mgr = checkpoint.manager(workdir / checkpoint.CHECKPOINTS, keep=config.keep_checkpoints,
                           save_every=config.checkpoint_every)
  restored = checkpoint.resume(mgr, state, run_meta)  # the newest intact step; damaged newer ones set aside
  best = _BestKeeper(workdir, select, state, run_meta) if validate and select else None
  if restored is not None:
    state = restored[0]
  start = int(state.step)
  end = min(config.total_steps, stop_at or config.total_steps)
  step_fn = make_train_step(task, tx, config.seed, mesh, learning_rate_fn)
  batches = prefetch_to_device(_even_batches(task.batches(start), mesh), parallel.batch_sharding(mesh))
  lead = jax.process_index() == 0  # one host logs and shows progress
  bar = tqdm(total=end, initial=start, desc=stage, disable=not progress or not lead, dynamic_ncols=True)
  window_start, window_images = time.perf_counter(), 0
  validation = run_log.RunLog(workdir, first_step=start + 1, stream='validation') if validate else None
  with run_log.RunLog(workdir, first_step=start + 1) as log, validation or contextlib.nullcontext():
    for step in range(start + 1, end + 1):
      batch = next(batches)
      if step == start + 1:
        progress_lib.say(stage, 'compiling the step', progress)
      state, metrics = step_fn(state, batch)
      # Fetching the metrics blocks on the step, so a NaN is caught at the step that made it, and dispatch never
      # runs ahead: multi-device CPU loops that queue many steps can deadlock in XLA's CPU all-reduce.
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      progress_lib.quiet()
      if not (math.isfinite(metrics['loss']) and math.isfinite(metrics['grad_norm'])):
        # A finite loss can hide NaN gradients (e.g. relu(NaN) = 0 in XLA): check both, before saving.
        raise NonFiniteLossError(f'loss {metrics["loss"]}, gradient norm {metrics["grad_norm"]} at step {step}; '
                                 f'checkpoints up to step {mgr.latest_step()} are kept in {workdir / "checkpoints"}')
      window_images += len(jax.tree.leaves(batch)[0])  # a global array (prefetch_to_device): all hosts' rows
      bar.update(1)
      bar.set_postfix(loss=f'{metrics["loss"]:.3f}')
      checkpoint.save(mgr, step, state, {'run': run_meta, 'step': step}, force=step == end)
      if step % config.log_every == 0 or step == end:
        log.write(step, {**metrics, 'images_per_s': window_images / (time.perf_counter() - window_start)})
        window_start, window_images = time.perf_counter(), 0
      if validate is not None and ((validate_every and step % validate_every == 0) or step == end):
        scalars = validate(state)
        validation.write(step, scalars)
        if best:
          best.offer(step, state, scalars)
        window_start = time.perf_counter()  # the validation's time is not the step's
  bar.close()
  mgr.wait_until_finished()
  return state


class _BestKeeper:
  """The best-on-validation state of a run, in `workdir/best_checkpoint/` (one step; its meta holds the scalars)."""

  def __init__(self, workdir: Path, select: str, like: TrainState, run_meta: dict):
    self.select, self.run_meta = select, run_meta
    self.mgr = checkpoint.manager(workdir / checkpoint.BEST_CHECKPOINT, keep=1)
    kept = checkpoint.resume(self.mgr, like, run_meta)  # a resumed run's best so far
    self.value = kept[1]['validation'][select] if kept else -math.inf

  def offer(self, step: int, state: TrainState, scalars: dict[str, float]) -> None:
    if self.select not in scalars:
      raise KeyError(f'select={self.select!r} is not one of the validation scalars {sorted(scalars)}')
    if scalars[self.select] > self.value:  # NaN never wins
      self.value = scalars[self.select]
      checkpoint.save(self.mgr, step, state, {'run': self.run_meta, 'step': step, 'validation': scalars}, force=True)


def best_checkpoint(workdir: str | Path, like: TrainState) -> tuple[TrainState, int, dict[str, float]] | None:
  """(state, step, validation scalars) of a run's best-on-validation checkpoint (`train(select=...)`), restored
  with the structure and shardings of `like`; None when the run kept none."""
  directory = Path(workdir) / checkpoint.BEST_CHECKPOINT
  restored = checkpoint.restore(checkpoint.manager(directory), like) if directory.is_dir() else None
  if restored is None:
    return None
  state, meta, step = restored
  return state, step, meta['validation']


def evaluated_state(workdir: str | Path, last: TrainState, use: str) -> tuple[TrainState, dict]:
  """(state, selection) for a trainer's report: the last state, or with use='best' the best-on-validation one (the
  last when the run kept none). selection: {'used', 'last_step'} and, when kept, 'best_step' with its
  'best_validation' scalars."""
  if use not in ('last', 'best'):
    raise ValueError(f"evaluate_checkpoint must be 'last' or 'best', got {use!r}")
  best = best_checkpoint(workdir, last)
  selection = {'used': use if best else 'last', 'last_step': int(last.step)}
  if best is None:
    return last, selection
  state, step, scalars = best
  selection.update(best_step=step, best_validation=scalars)
  return (state if use == 'best' else last), selection


def _even_batches(batches: Iterator[dict], mesh) -> Iterator[dict]:
  """Passes host batches through, refusing a global batch that the mesh cannot split evenly."""
  for batch in batches:
    rows = len(jax.tree.leaves(batch)[0]) * jax.process_count()
    if rows % mesh.size:
      raise ValueError(f'the global batch of {rows} rows does not split evenly over {mesh.size} devices; '
                       f'use a batch size that is a multiple of {mesh.size}')
    yield batch


def train_from_config(task: Task, config, workdir: str | Path, **kwargs) -> TrainState:
  """`train` with the optimizer, schedule and loop settings of a run config.

  Reads config.optimizer (`OptimizerConfig` fields), total_steps, seed, checkpoint_every,
  keep_checkpoints and log_every; the whole config is the run's metadata. kwargs go to `train`.
  """
  optimizer = OptimizerConfig(**{**config.optimizer, 'milestones': tuple(config.optimizer.get('milestones', ())),
                                 'weight_decay_rules': tuple(tuple(rule) for rule in
                                                             config.optimizer.get('weight_decay_rules', ()))})
  loop = LoopConfig(**{field.name: config[field.name] for field in dataclasses.fields(LoopConfig)})
  return train(task, make_optimizer(optimizer, config.total_steps), loop, workdir, run_meta=config.to_dict(),
               learning_rate_fn=learning_rate_schedule(optimizer, config.total_steps), **kwargs)
