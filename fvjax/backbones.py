"""Frozen backbones, by name: a finished `fvjax train` workdir, or a pretrained model shipped in the package.

The hypernetwork, FaceCoresetNet, enrolment and `fvjax eval` name their backbone with one string:
`'pretrained:dlib_resnet'` (see `fvjax.pretrained`) or the path of a recognition workdir. Either way they get a
`FrozenBackbone`: a jitted function from normalised insightface crops to raw features, its size, and the data its
features are computed on (a trained backbone brings its own data folder and identity split, so test identities stay
unseen; a pretrained one takes them from the caller's config).
"""

import dataclasses
import hashlib
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fvjax import checkpoint, models, pretrained
from fvjax.data import folder as data_folder
from fvjax.eval import verification


@dataclasses.dataclass(frozen=True)
class DataSplit:
  """The faces features are computed on, and which identities are held out for testing."""
  data_dir: str
  test_fraction: float
  split_seed: int
  align: str = 'never'  # how an identity folder's images become crops (`fvjax.data.folder`)


@dataclasses.dataclass(frozen=True)
class FrozenBackbone:
  """A recogniser used as a fixed feature extractor.

  features_fn: normalised crops (x / 255 - 0.5) / 0.5 [B, 112, 112, 3] -> raw features [B, embedding_size]
  (unnormalised: their norm is the quality FaceCoresetNet reads). params / madds: its size and multiply-adds per
  image. step: the training step of a workdir backbone (None for shipped weights). run_config: the recognition
  run of a workdir backbone (None for a pretrained one).
  """
  source: str
  features_fn: Callable[[np.ndarray], jax.Array]
  embedding_size: int
  params: int
  madds: int
  step: int | None = None
  run_config: ml_collections.ConfigDict | None = None

  def data_split(self, config: ml_collections.ConfigDict) -> DataSplit:
    """A trained backbone's own data and split; for a pretrained one, `config`'s data_dir, test_fraction and
    split_seed. Raises ValueError when a trained backbone is given another data folder."""
    if self.run_config is None:
      if not config.data_dir:
        raise ValueError(f'the backbone {self.source} brings no data: set data_dir (an identity folder)')
      return DataSplit(str(config.data_dir), float(config.test_fraction), int(config.split_seed), config.align)
    run = self.run_config
    if config.data_dir and Path(config.data_dir).resolve() != Path(run.data_dir).resolve():
      raise ValueError(f'the backbone of {self.source} was trained on {run.data_dir}; its identity split is '
                       f'reused, so data_dir must be empty or the same (got {config.data_dir})')
    return DataSplit(str(run.data_dir), float(run.test_fraction), int(run.split_seed), run.get('align', 'never'))

  def features_dir(self, split: DataSplit) -> Path:
    """Where features of the split's data are cached: beside a workdir backbone, or under FVJAX_CACHE for a
    pretrained one (a folder per data path and align mode)."""
    if self.run_config is not None:
      return Path(self.source) / 'features'
    name = self.source.removeprefix(pretrained.PREFIX)
    digest = hashlib.sha256(f'{Path(split.data_dir).resolve()}|{split.align}'.encode()).hexdigest()[:16]
    return data_folder.DEFAULT_CACHE / 'features' / name / f'{Path(split.data_dir).name}_{digest}'


def load(source: str | Path, geometry: str = 'align') -> FrozenBackbone:
  """The backbone `source` names: 'pretrained:NAME' or a finished recognition workdir.

  geometry: for a pretrained backbone, how crops reach its input ('align' or 'resize', see `fvjax.pretrained`).
  """
  source = str(source)
  if pretrained.is_pretrained(source):
    model = pretrained.load(source, geometry)
    chip = jnp.zeros((1, *model.input_shape))
    return FrozenBackbone(source=source, features_fn=model.features_fn, embedding_size=model.embedding_size,
                          params=models.count_params(model.variables),
                          madds=models.count_madds_of(model.module.apply, model.variables, chip))
  module, variables, config, step = load_trained(source)
  return FrozenBackbone(source=str(Path(source)), features_fn=verification.backbone_embed_fn(module, variables),
                        embedding_size=int(config.embedding_size), params=models.count_params(variables),
                        madds=models.count_madds(module, variables, models.INPUT_SHAPE), step=step,
                        run_config=config)


def load_trained(workdir: str | Path) -> tuple[models.FaceNet, dict, ml_collections.ConfigDict, int]:
  """(module, frozen variables, run config, step) from the latest checkpoint of a recognition workdir."""
  state, run = checkpoint.load_run(workdir, 'train', 'embedding_size')
  config = ml_collections.ConfigDict(run)
  variables = backbone_variables(state['params'], state['model_state'])
  return build_backbone(config), jax.tree.map(jnp.asarray, variables), config, int(state['step'])


def build_backbone(config: ml_collections.ConfigDict) -> models.FaceNet:
  """The FaceNet module a recognition config describes (backbone name, embedding size, activation, dtype)."""
  overrides = {'activation': config.activation} if config.activation else {}
  return models.backbone(config.backbone, config.embedding_size, dtype=jnp.dtype(config.dtype), **overrides)


def backbone_variables(params, model_state) -> dict:
  """The backbone's {'params', 'batch_stats'} out of a recognition run's train state (backbone + margin head)."""
  return {'params': params['backbone'], 'batch_stats': model_state['batch_stats']['backbone']}


def same(a: str | Path, b: str | Path) -> bool:
  """Whether two backbone names denote the same backbone (the same pretrained model, or the same workdir)."""
  a, b = str(a), str(b)
  if pretrained.is_pretrained(a) or pretrained.is_pretrained(b):
    return a.removeprefix(pretrained.PREFIX) == b.removeprefix(pretrained.PREFIX)
  return Path(a).resolve() == Path(b).resolve()


def require_same(first: str | Path, second: str | Path, first_run, second_run) -> None:
  """Raises ValueError unless two runs were trained on the same backbone (their features must be comparable)."""
  if not same(first, second):
    raise ValueError(f'the run {first_run} was trained on the backbone {first}, the run {second_run} on {second}: '
                     'their embeddings are not comparable')
