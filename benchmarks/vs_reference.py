"""fvjax against the PyTorch reference (github cvtower/seesawfacenet_pytorch), side by side in one process.

Run: pip install -e '.[bench]' && python benchmarks/vs_reference.py --reference DIR
  DIR: a checkout of cvtower/seesawfacenet_pytorch (the reference stays outside this project).

For each backbone it times, in alternating rounds so that both frameworks see the same machine state (each round
starts with one untimed step: a step straight after the other framework's runs up to 2x slower):
  forward    inference (eval-mode BatchNorm), batch of 112x112x3 float32 images;
  train      one training step as each codebase trains: forward, ArcFace head (s=64, m=0.5) over `--classes`
             identities, softmax cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4) update.
fvjax's step is the library's own (`fvjax.train.loop.make_train_step` over `recognition.classification_task`);
the reference's is the loop of its `Learner.train`. PyTorch uses `--threads` CPU threads (default: every core), XLA every core. It prints img/s, the ratio
fvjax / reference, and each model's achieved multiply-adds per second against a large float32 matmul measured
in the same run (a training step counts 3x the forward MAdds).
"""

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

import jax

from common import matmul_macs_per_s, use_fvjax_process_settings
from fvjax import models, parallel
from fvjax.models.heads import MarginHead
from fvjax.train import loop, recognition
from fvjax.train.optim import OptimizerConfig, make_optimizer

# name in fvjax -> (module under the reference's src/, class name)
REFERENCE_MODELS = {
    'seesaw_shuffle': ('seesaw_models.seesaw_shuffleFaceNet', 'seesaw_shuffleFaceNet'),
    'mobilefacenet': ('model', 'MobileFaceNet'),
    'dw_seesaw_v2': ('seesaw_models.DW_seesawFaceNetv2', 'DW_seesawFaceNetv2'),
}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--reference', required=True, type=Path, help='checkout of cvtower/seesawfacenet_pytorch')
  parser.add_argument('--backbones', default=','.join(REFERENCE_MODELS))
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--classes', type=int, default=1000)
  parser.add_argument('--rounds', type=int, default=3, help='alternating timing rounds (the median is reported)')
  parser.add_argument('--iters', type=int, default=2, help='steps per round')
  parser.add_argument('--threads', type=int, default=os.cpu_count(), help="PyTorch's CPU threads")
  return parser.parse_args()


def import_torch(threads: int):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    sys.exit("PyTorch is missing: install the benchmark extra with pip install -e '.[bench]'")
  torch.set_num_threads(threads)
  return torch


def reference_model(src: Path, name: str):
  """The reference's model class `name` (fvjax naming) from a checkout's src/ folder."""
  if not (src / 'model.py').is_file():
    sys.exit(f'{src} is not the src/ folder of a cvtower/seesawfacenet_pytorch checkout (no model.py there)')
  sys.path.insert(0, str(src))
  module_name, class_name = REFERENCE_MODELS[name]
  module = importlib.import_module(module_name)
  # The reference's DW_seesawFaceNetv2.__init__ calls super() on a misspelt class name (dw_SeesawFaceNetv2) and
  # cannot be constructed as published; the alias is the only change made to it.
  setattr(module, 'dw_SeesawFaceNetv2', getattr(module, class_name))
  return getattr(module, class_name), module.Arcface


class ReferenceBench:
  """The reference model, its ArcFace head and SGD, as its Learner trains them."""

  def __init__(self, torch, src: Path, name: str, batch: int, classes: int):
    model_cls, head_cls = reference_model(src, name)
    self.torch = torch
    self.model, self.head = model_cls(embedding_size=512), head_cls(embedding_size=512, classnum=classes)
    self.optimizer = torch.optim.SGD([*self.model.parameters(), *self.head.parameters()], lr=0.1, momentum=0.9,
                                     weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    self.images = torch.rand((batch, 3, 112, 112), generator=generator) * 2 - 1
    self.labels = torch.randint(0, classes, (batch,), generator=generator)

  def forward(self):
    self.model.eval()
    with self.torch.no_grad():
      return self.model(self.images)

  def train_step(self):
    self.model.train()
    self.optimizer.zero_grad()
    loss = self.torch.nn.functional.cross_entropy(self.head(self.model(self.images), self.labels), self.labels)
    loss.backward()
    self.optimizer.step()
    return loss.item()


class FvjaxBench:
  """fvjax's backbone and the library's own training step (ArcFace head, SGD with coupled weight decay)."""

  def __init__(self, name: str, batch: int, classes: int):
    backbone = models.backbone(name)
    classifier = recognition.FaceClassifier(backbone, MarginHead(classes))
    rng = jax.random.key(0)
    batch_data = {'image': jax.random.uniform(rng, (batch, *models.INPUT_SHAPE), minval=-1, maxval=1),
                  'label': jax.random.randint(rng, (batch,), 0, classes)}
    task = recognition.classification_task(classifier, batches=None)
    tx = make_optimizer(OptimizerConfig(learning_rate=0.1, weight_decay=5e-4, schedule='constant'), total_steps=1)
    mesh = parallel.data_mesh()
    self.state = loop.init_state(task, tx, seed=0, mesh=mesh)
    self.batch = parallel.host_to_global(batch_data, parallel.batch_sharding(mesh))
    self._step = loop.make_train_step(task, tx, seed=0, mesh=mesh)
    variables = {'params': self.state.params['backbone'], 'batch_stats': self.state.model_state['batch_stats']['backbone']}
    self._forward = jax.jit(lambda v, x: backbone.apply(v, x, train=False))
    self._forward_args = (variables, self.batch['image'])
    self.madds = models.count_madds(backbone, variables, models.INPUT_SHAPE)
    self.params = models.count_params(variables['params'])

  def forward(self):
    return jax.block_until_ready(self._forward(*self._forward_args))

  def train_step(self):
    self.state, metrics = self._step(self.state, self.batch)
    return float(metrics['loss'])


def images_per_second(fn, batch: int, iters: int) -> float:
  start = time.perf_counter()
  for _ in range(iters):
    fn()
  return batch * iters / (time.perf_counter() - start)


def compare(torch, src: Path, name: str, args) -> dict:
  ours, ref = FvjaxBench(name, args.batch, args.classes), ReferenceBench(torch, src, name, args.batch, args.classes)
  row = {'name': name, 'params': ours.params, 'madds': ours.madds}
  for kind in ('forward', 'train_step'):
    fns = {'fvjax': getattr(ours, kind), 'reference': getattr(ref, kind)}
    rates = {who: [] for who in fns}
    for _ in range(args.rounds):
      for who, fn in fns.items():
        fn()  # untimed: compiles, and lets each framework refill the caches and memory the other one just used
        rates[who].append(images_per_second(fn, args.batch, args.iters))
    for who in fns:
      row[kind, who] = statistics.median(rates[who])
  return row


def main():
  args = parse_args()
  settings = use_fvjax_process_settings()
  torch = import_torch(args.threads)
  src = args.reference / 'src'
  peak = matmul_macs_per_s()
  rows = [compare(torch, src, name, args) for name in args.backbones.split(',')]
  print(f'{jax.devices()[0].device_kind} ({jax.default_backend()}), {args.threads} threads; jax {jax.__version__}, '
        f'torch {torch.__version__}; {settings}; batch {args.batch}, {args.classes} classes, median of {args.rounds} rounds')
  print(f'float32 matmul: {peak / 1e9:.1f} GMAC/s')
  header = (f"{'backbone':<15}{'MAdds':>7}  {'forward img/s':>22}{'ratio':>7}  {'train step img/s':>22}{'ratio':>7}"
            f"  {'GMAC/s fwd/train (% matmul)':>29}")
  print(header)
  print(f"{'':<15}{'':>7}  {'fvjax':>11}{'reference':>11}{'':>7}  {'fvjax':>11}{'reference':>11}")
  for r in rows:
    fwd, train = [r['forward', w] for w in ('fvjax', 'reference')], [r['train_step', w] for w in ('fvjax', 'reference')]
    macs_fwd, macs_train = r['madds'] * fwd[0], 3 * r['madds'] * train[0]
    print(f"{r['name']:<15}{r['madds'] / 1e6:>6.0f}M  {fwd[0]:>11.1f}{fwd[1]:>11.1f}{fwd[0] / fwd[1]:>6.2f}x  "
          f"{train[0]:>11.1f}{train[1]:>11.1f}{train[0] / train[1]:>6.2f}x  "
          f"{macs_fwd / 1e9:>8.1f} / {macs_train / 1e9:.1f} ({100 * macs_fwd / peak:.0f}% / {100 * macs_train / peak:.0f}%)")


if __name__ == '__main__':
  main()
