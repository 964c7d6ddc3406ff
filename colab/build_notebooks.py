"""Writes the colab/*.ipynb notebooks from the cell sources below (outputs are added by executing them).

Run: python colab/build_notebooks.py && python colab/execute.py colab/quickstart.ipynb   (saves outputs in place)
"""

from pathlib import Path

import nbformat

SETUP = '''\
# On Colab: upload or clone this repository, then `!pip install -e <repo>`; locally `pip install -e .` is enough.
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from fvjax import cli, data, demo, edge, enroll, imageio

DATA = Path(os.environ.get('FVJAX_NOTEBOOK_DATA', cli.DEMO_DATA))  # any identity folder, e.g. celeba_aligned
WORKDIR = Path(os.environ.get('FVJAX_NOTEBOOK_WORKDIR', 'runs/demo'))  # shared with `fvjax demo`: reused if run
BACKBONE = os.environ.get('FVJAX_NOTEBOOK_BACKBONE', demo.DEFAULT_BACKBONE)  # or 'seesaw_shuffle': trained here
STEPS = int(os.environ.get('FVJAX_NOTEBOOK_STEPS', 85))  # seesaw_shuffle's training steps; CI runs a smoke version'''

TRAIN = '''\
report = demo.run(DATA, WORKDIR, backbone_steps=STEPS, backbone=BACKBONE, progress=False)  # reloads finished stages
print(demo.format_table(report['table']))'''

QUICKSTART = [
    ('markdown', '''\
# fvjax quickstart: three face-verification methods on a CPU in minutes

This notebook is `fvjax demo`, step by step, on the AT&T faces that ship with fvjax (38 people, 10 photos each):

1. the shipped pretrained **dlib_resnet** embeds every face (`BACKBONE = 'seesaw_shuffle'` trains a
   **SeesawFaceNet** from scratch on the 28 training people instead, for `STEPS` steps);
2. a **hypernetwork** learns, on 28 people, to turn one photo of a new person into a tiny personal verifier
   (25,665 weights);
3. **FaceCoresetNet** learns to turn a set of photos into one descriptor.

Everything is evaluated on the 10 people never seen in training. On a GPU/TPU runtime, point `DATA` at a
larger identity folder (and, for a SeesawFaceNet of your own, raise `STEPS`).'''),
    ('code', SETUP),
    ('markdown', '''\
## 1-3. Train the three stages and evaluate them

Each stage is a resumable run under `WORKDIR`, the same runs as `fvjax demo`: finished stages are reloaded,
interrupted ones continue where they stopped.'''),
    ('code', TRAIN),
    ('markdown', '''\
ROC curves: the backbone's cosine similarity against the personalised verifiers on image pairs (left), and the
set descriptors on template pairs (right).'''),
    ('code', '''\
from IPython.display import Image
Image(filename=str(WORKDIR / 'roc.png'))'''),
    ('markdown', '''\
## 4. Enrol an unseen person and verify probes

`enroll.from_images` runs the frozen backbone and the generator once; the resulting verifier is a flat weight vector
that `edge.numpy_forward` runs with NumPy alone (what a phone or door lock would hold).'''),
    ('code', '''\
faces = data.load_faces(DATA)
_, test_idx = data.split_identities(faces.labels, 0.25, 0)  # the demo's split: these people were never trained on
unseen = [faces.names[i] for i in np.unique(faces.labels[test_idx])]
person, others = unseen[0], unseen[1:4]
photos = sorted((DATA / person).iterdir())
enrolment = np.stack([imageio.decode_face(p.read_bytes(), source=str(p)) for p in photos[:1]])  # aligned crops
user = enroll.from_images(WORKDIR / 'hyper', enrolment, [p.name for p in photos[:1]], person)
probes = photos[1:5] + [sorted((DATA / o).iterdir())[0] for o in others]
images = np.stack([imageio.decode_face(p.read_bytes(), source=str(p)) for p in probes])
spec = edge.VerifierSpec.from_dict(user.spec)
logits = edge.numpy_forward(user.theta, edge.verifier_input(images, spec), spec)

fig, axes = plt.subplots(1, len(probes) + 1, figsize=(2 * (len(probes) + 1), 2.6))
axes[0].imshow(enrolment[0])
axes[0].set_title(f'enrolled: {person}', fontsize=9)
for ax, path, image, logit in zip(axes[1:], probes, images, logits):
  ax.imshow(image)
  same = path.parent.name == person
  ax.set_title(f"{'same' if same else 'other'}\\nlogit {logit:+.2f}", fontsize=9,
               color='green' if (logit > 0) == same else 'red')
for ax in axes:
  ax.axis('off')
plt.tight_layout()'''),
    ('markdown', '''\
Green titles are correct decisions at logit 0, red ones mistakes. The same file can be written and checked from the
shell: `fvjax enroll --hyper runs/demo/hyper --images PHOTO --out me.fvjax` and `fvjax verify me.fvjax PROBE`.

## Where next
- `experiments/*_celeba_cpu.py`: the same methods on 240 real CelebA identities;
- `experiments/README.md`: the papers' full-scale configs and what has been measured at small scale.'''),
]

HYPERNETWORK = [
    ('markdown', '''\
# Personalised verifiers from a hypernetwork (Rozner et al., FG 2024)

A frozen backbone embeds one enrolment photo; a trained generator maps that embedding to the 25,665 weights of a
tiny CNN f that answers "is this my user?" (a learned base shared by every user, plus a generated last layer). Many users are scored at once by `jax.vmap` (GPU/TPU) or `lax.map`
(CPU) over their weights: `scores[u, p] = f(theta[u], probe[p])`. This notebook reuses the `fvjax demo` runs.'''),
    ('code', SETUP),
    ('code', TRAIN),
    ('markdown', '## Every unseen person enrolled from one photo, scored on every photo of every unseen person'),
    ('code', '''\
from fvjax import verifiers

gen = verifiers.load(WORKDIR / 'hyper')
faces = data.load_faces(DATA)
_, test_idx = data.split_identities(faces.labels, 0.25, 0)  # the demo's split: never trained on
test_idx = test_idx[np.argsort(faces.labels[test_idx], kind='stable')]  # probes grouped by person
labels = faces.labels[test_idx]
unseen = np.unique(labels)
images = data.decode_all(faces, test_idx)  # uint8 [N, 112, 112, 3]
first = np.array([np.flatnonzero(labels == u)[0] for u in unseen])  # each person's enrolment photo
thetas = gen.enroll(images[first])  # [users, 25,665]
scores = gen.score(thetas, images)  # [users, probes]: every verifier on every photo (fvjax.eval.personalized)
print(f'{thetas.shape[0]} verifiers x {thetas.shape[1]:,} weights; scores {scores.shape}')

ranked = (scores - scores.mean(1, keepdims=True)) / scores.std(1, keepdims=True)  # each verifier's own scale
fig, ax = plt.subplots(figsize=(9, 3))
im = ax.imshow(ranked, aspect='auto', cmap='coolwarm', vmin=-3, vmax=3)
ax.set_xlabel('probe photo (grouped by person)')
ax.set_ylabel('enrolled person')
fig.colorbar(im, label='logit, standardised per row')
plt.tight_layout()'''),
    ('markdown', '''\
Each row is standardised (its mean subtracted, divided by its spread), so verifiers with different offsets share one
colour scale. A good verifier bank shows a red block on each row's own person, on the diagonal. Most rows show it;
a few barely lift their own person above the others' photos. The verifiers trail the backbone (the table above: on
the pretrained dlib_resnet 83.9% pair accuracy, AUC 0.90, against 99.7% for its cosine): the generator is trained on
25 people, the paper's on MS1MV2's 85k identities, and with so few people each user's kernel here is mostly f's own
template of the enrolment photo (`experiments/hyper_levers_demo_cpu.py`). The verifiers' size is the point: each row is
computed by a 25,665-parameter net (2.8M MAdds per photo) instead of the 5.6M-parameter, 271M-MAdd backbone.'''),
    ('code', '''\
own = labels[None, :] == unseen[:, None]
print(f'mean logit on own photos {scores[own].mean():+.2f}, on others {scores[~own].mean():+.2f}')'''),
]

FACECORESETNET = [
    ('markdown', '''\
# FaceCoresetNet: which faces of a set make the coreset (Shapira and Keller, AAAI 2024)

The aggregator picks K=3 faces by quality-aware farthest-point sampling (first the highest feature norm, then the
faces farthest from those picked, distances scaled by norm^gamma), lets them attend to the whole set, and averages
them into one descriptor. This notebook reuses the `fvjax demo` runs.'''),
    ('code', SETUP),
    ('code', TRAIN),
    ('code', '''\
import jax.numpy as jnp
from fvjax import backbones
from fvjax.train import coreset
from fvjax.train.features import backbone_features

aggregator, params, c_config = coreset.load_aggregator(WORKDIR / 'coreset')
backbone = backbones.load(c_config.backbone)
features, faces = backbone_features(backbone, backbone.data_split(c_config))  # raw features, cached
print(f"learned gamma {float(params['gamma']):.4f}; K = {aggregator.coreset_size}")
_, test_idx = data.split_identities(faces.labels, 0.25, 0)
person = np.unique(faces.labels[test_idx])[0]
rows = np.flatnonzero(faces.labels == person)
out = aggregator.apply({'params': params}, jnp.asarray(features[rows, 0])[None])
picks = np.argmax(np.asarray(out.selection[0]), axis=-1)  # [K] member index of each pick
norms = np.linalg.norm(features[rows, 0], axis=-1)
photos = data.decode_all(faces, rows)

fig, axes = plt.subplots(1, len(rows), figsize=(1.6 * len(rows), 2.4))
for i, (ax, photo) in enumerate(zip(axes, photos)):
  ax.imshow(photo)
  ax.axis('off')
  order = np.flatnonzero(picks == i)
  ax.set_title(f'norm {norms[i]:.1f}' + (f'\\npick {order[0] + 1}' if order.size else '\\n'), fontsize=9,
               color='green' if order.size else 'black')
  if order.size:
    ax.add_patch(plt.Rectangle((0, 0), 111, 111, fill=False, edgecolor='green', linewidth=4))
plt.tight_layout()'''),
    ('markdown', 'Green frames are the coreset, in pick order. The descriptor does not depend on the order of the set:'),
    ('code', '''\
shuffled = np.random.default_rng(0).permutation(len(rows))
again = aggregator.apply({'params': params}, jnp.asarray(features[rows[shuffled], 0])[None])
print('max difference after shuffling the set:', float(jnp.abs(again.descriptor - out.descriptor).max()))'''),
]


def write(path: Path, cells) -> None:
  nb = nbformat.v4.new_notebook()
  nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
  nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == 'markdown' else nbformat.v4.new_code_cell(src)
              for kind, src in cells]
  nbformat.write(nb, path)


NOTEBOOKS = {'quickstart': QUICKSTART, 'hypernetwork': HYPERNETWORK, 'facecoresetnet': FACECORESETNET}

if __name__ == '__main__':
  for name, cells in NOTEBOOKS.items():
    write(Path(__file__).parent / f'{name}.ipynb', cells)
