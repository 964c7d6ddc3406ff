"""Wiring pinned by independent NumPy re-implementations written from the reference code's semantics.

Parameter and MAdd counts cannot catch a shuffle in the wrong place, a swapped
projection, a missing shortcut or a LayerNorm around the wrong sum. Each oracle
here is a direct transcription of the reference PyTorch forward (NCHW, torch's
PermutationBlock, MaxPool2d, MultiheadAttention) in NumPy float64, fed the same
random weights as the Flax module, including non-trivial BatchNorm statistics.
References: cvtower/seesawfacenet_pytorch (seesaw_shuffleFaceNet.py,
seesaw_shareFaceNet.py, DW_seesawFaceNetv1/v2.py) and ligaripash/FaceCoresetNet
(net_template.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from fvjax.models.coreset import CoresetAggregator, farthest_point_sample
from fvjax.models.seesaw import SeesawBlock

BN_EPS = 1e-5
LN_EPS = 1e-5


def randomized(variables, seed):
  """The same tree with every leaf redrawn: weights ~ N(0, 0.3^2), BN variances in [0.5, 2]."""
  rng = np.random.default_rng(seed)
  def redraw(path, leaf):
    if path[-1].key == 'var':
      return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), jnp.float32)
    return jnp.asarray(rng.normal(0.0, 0.3, leaf.shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(redraw, variables)


def np64(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


# ---- NumPy reference of the seesaw block (NCHW, as the PyTorch code) ----

def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def swish(x):  # the reference's h_swish
  return x * sigmoid(x)


def batch_norm(x, params, stats):
  shape = (1, -1, 1, 1)
  scale = params['scale'].reshape(shape) / np.sqrt(stats['var'].reshape(shape) + BN_EPS)
  return (x - stats['mean'].reshape(shape)) * scale + params['bias'].reshape(shape)


def pointwise(x, kernel):
  """Conv2d(kernel_size=1, bias=False): kernel [in, out]."""
  return np.einsum('nchw,co->nohw', x, kernel)


def depthwise(x, kernel, stride):
  """Conv2d(C, C, 3, stride, padding=1, groups=C, bias=False): kernel [3, 3, 1, C]."""
  padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
  windows = sliding_window_view(padded, (3, 3), axis=(2, 3))[:, :, ::stride, ::stride]  # [N, C, H', W', 3, 3]
  return np.einsum('nchwij,ijc->nchw', windows, kernel[:, :, 0, :])


def conv_block(x, p, s, stride=1, act=True, dw=False):
  """The reference's Conv_block (act=True, h_swish) or Linear_block (act=False)."""
  y = depthwise(x, p['conv']['kernel'], stride) if dw else pointwise(x, p['conv']['kernel'])
  y = batch_norm(y, p['bn'], s['bn'])
  return swish(y) if act else y


def permutation(x, groups):
  """The reference's PermutationBlock: view(n, G, c/G, h, w).permute(0, 2, 1, 3, 4)."""
  n, c, h, w = x.shape
  return x.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)


def se_layer(x, p):
  """SELayer: GAP -> Linear(C, C/4) -> PReLU(C/4) -> Linear(C/4, C) -> Sigmoid, times x."""
  y = x.mean(axis=(2, 3))
  y = y @ p['fc1']['kernel'] + p['fc1']['bias']
  y = np.where(y >= 0, y, p['prelu']['alpha'] * y)
  y = sigmoid(y @ p['fc2']['kernel'] + p['fc2']['bias'])
  return x * y[:, :, None, None]


def max_pool_2x2(x):
  n, c, h, w = x.shape
  return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def seesaw_depth_wise(x, p, s, mix, stride, shortcut):
  """seesaw_Depth_Wise.forward of the reference files (x NCHW)."""
  q = x.shape[1] // 4
  h = np.concatenate([conv_block(x[:, :q], p['conv_1'], s['conv_1']),
                      conv_block(x[:, q:], p['conv_3'], s['conv_3'])], axis=1)
  if mix == 'shuffle':
    h = permutation(h, 2)
  h = se_layer(conv_block(h, p['conv_dw'], s['conv_dw'], stride, dw=True), p['se'])
  if mix == 'shuffle':  # seesaw_shuffleFaceNet / DW v1, v2: first quarter -> project_1
    quarter = h.shape[1] // 4
    h = np.concatenate([conv_block(h[:, :quarter], p['project_1'], s['project_1'], act=False),
                        conv_block(h[:, quarter:], p['project_3'], s['project_3'], act=False)], axis=1)
  else:  # seesaw_shareFaceNet: first three quarters -> project_3
    three = h.shape[1] * 3 // 4
    h = np.concatenate([conv_block(h[:, :three], p['project_3'], s['project_3'], act=False),
                        conv_block(h[:, three:], p['project_1'], s['project_1'], act=False)], axis=1)
  if shortcut == 'identity':
    return x + h
  if shortcut == 'pool_conv':  # DW v2's mapping: MaxPool2d(2, 2) -> Conv_block(1x1)
    return h + conv_block(max_pool_2x2(x), p['shortcut'], s['shortcut'])
  if shortcut == 'conv':  # DW v1's mapping: Conv_block(1x1, stride 2)
    return h + conv_block(x[:, :, ::2, ::2], p['shortcut'], s['shortcut'])
  return h


SEESAW_CASES = [
    # (mix, stride, shortcut, in, expansion, out)
    ('shuffle', 1, 'identity', 16, 32, 16),
    ('share', 1, 'identity', 16, 32, 16),
    ('shuffle', 2, None, 16, 32, 32),  # seesaw_shuffle's stride-2 block: no shortcut
    ('share', 2, None, 16, 32, 32),
    ('shuffle', 2, 'pool_conv', 16, 48, 32),  # DW v2
    ('shuffle', 2, 'conv', 16, 48, 32),  # DW v1
]


@pytest.mark.parametrize('mix,stride,shortcut,cin,expansion,cout', SEESAW_CASES)
@pytest.mark.parametrize('depthwise_impl', ['conv', 'shift'])
def test_seesaw_block_equals_numpy_reference(mix, stride, shortcut, cin, expansion, cout, depthwise_impl):
  x = np.random.default_rng(0).normal(size=(2, 8, 8, cin)).astype(np.float32)
  block = SeesawBlock(cout, expansion, stride, mix, shortcut, depthwise_impl=depthwise_impl)
  variables = randomized(block.init(jax.random.key(0), x, train=False), seed=1)
  got = block.apply(variables, x, train=False)
  v = np64(variables)
  want = seesaw_depth_wise(np.asarray(x, np.float64).transpose(0, 3, 1, 2), v['params'], v['batch_stats'], mix,
                           stride, shortcut)
  np.testing.assert_allclose(got, want.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


# ---- NumPy reference of the FaceCoresetNet attention block ----

def layer_norm(x, p):
  mu = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + LN_EPS) * p['scale'] + p['bias']


def multihead_attention(p, q, k, v, key_mask):
  """torch.nn.MultiheadAttention(q, k, v) for one set: q [Q, C], k, v [T, C], key_mask [T] (False = ignored)."""
  project = lambda x, name: np.einsum('tc,chd->thd', x, p[name]['kernel']) + p[name]['bias']
  qh, kh, vh = project(q, 'query'), project(k, 'key'), project(v, 'value')
  logits = np.einsum('qhd,khd->hqk', qh, kh) / np.sqrt(qh.shape[-1])
  logits = np.where(key_mask[None, None, :], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum('hqk,khd,hdc->qc', weights, vh, p['out']['kernel']) + p['out']['bias']


def norm_encoding(norms, dim):
  """get_proposal_pos_embed of the reference: interleaved sin/cos of 2 pi n / 10000^(2 floor(i/2) / dim)."""
  pos = 2 * np.pi * norms[:, None] / 10000.0**(2 * (np.arange(dim) // 2) / dim)
  out = np.empty_like(pos)
  out[:, 0::2], out[:, 1::2] = np.sin(pos[:, 0::2]), np.cos(pos[:, 1::2])
  return out


def coreset_block(features, picks, p):
  """The aggregator's forward for one set x [T, C] given its coreset picks: refined coreset mean [C].

  q = LN1(C + E_C + SA(C + E_C)); C' = C + LN2(C + CA(q, X + E_X, X)); mean over the coreset.
  """
  coreset = features[picks]
  encode = lambda x: layer_norm(norm_encoding(np.linalg.norm(x, axis=-1), x.shape[-1]), p['norm_encoding_norm'])
  q = coreset + encode(coreset)
  q = layer_norm(q + multihead_attention(p['self_attention'], q, q, q, np.ones(len(picks), bool)),
                 p['self_attention_norm'])
  cross = multihead_attention(p['cross_attention'], q, features + encode(features), features,
                              np.ones(len(features), bool))
  return (coreset + layer_norm(coreset + cross, p['cross_attention_norm'])).mean(axis=0)


def test_coreset_attention_block_equals_numpy_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 7, 16)) * rng.uniform(0.5, 3.0, (3, 7, 1))
  model = CoresetAggregator(coreset_size=3, num_heads=4)
  variables = randomized(model.init(jax.random.key(0), jnp.asarray(x, jnp.float32)), seed=2)
  variables['params']['gamma'] = jnp.float32(0.5)
  out = model.apply(variables, jnp.asarray(x, jnp.float32))
  p = np64(variables['params'])
  for b in range(len(x)):
    picks = np.argmax(np.asarray(out.selection[b]), axis=-1)
    np.testing.assert_allclose(out.aggregate[b], coreset_block(x[b], picks, p), rtol=1e-4, atol=1e-4)


# ---- NumPy reference of the training-path (Gumbel) selection ----

def gumbel_fps(x, valid, k, gamma, noise, tau, scale):
  """Hard Gumbel picks by definition: argmax over the available of (scale * score + noise) / tau.

  The first score is the norm, later ones the quality distance to the nearest coreset member.
  """
  norms = np.linalg.norm(x, axis=-1)
  unit = x / norms[:, None]
  available = valid.copy()
  picks, score = [], scale * norms
  for i in range(min(k, valid.sum())):
    pick = int(np.argmax(np.where(available, (score + noise[i]) / tau, -np.inf)))
    picks.append(pick)
    available[pick] = False
    distance = np.min([norms**gamma * (1 - unit @ unit[j]) / 2 for j in picks], axis=0)
    score = scale * distance
  return picks


@pytest.mark.parametrize('tau,scale', [(1.0, 1.0), (0.25, 1.0), (1.0, 20.0)])
def test_gumbel_selection_equals_numpy_reference_given_the_same_noise(tau, scale):
  rng = np.random.default_rng(1)
  b, t, k = 4, 9, 4
  x = rng.normal(size=(b, t, 8)) * rng.uniform(0.5, 2.0, (b, t, 1))
  mask = np.ones((b, t), bool)
  mask[1, 5:] = False
  mask[2, 2:] = False  # fewer valid members than k
  key = jax.random.key(7)
  selection, picked = farthest_point_sample(jnp.asarray(x, jnp.float32), jnp.asarray(mask), k, jnp.float32(0.7),
                                            key, tau, scale)
  noise = np.stack([np.asarray(jax.random.gumbel(kk, (b, t)), np.float64) for kk in jax.random.split(key, k)])
  for s in range(b):
    want = gumbel_fps(x[s], mask[s], k, 0.7, noise[:, s], tau, scale)
    got = np.asarray(selection[s])
    assert picked[s].sum() == len(want)
    assert np.argmax(got[:len(want)], axis=-1).tolist() == want
    np.testing.assert_allclose(got[:len(want)], np.eye(t)[want], atol=1e-6)  # straight-through: one-hot forward
    np.testing.assert_array_equal(got[len(want):], 0.0)
