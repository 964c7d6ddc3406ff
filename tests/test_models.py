import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fvjax import models
from fvjax.models import layers
from fvjax.models.seesaw import FaceNet, FaceNetSpec, Stage

# Trainable parameters of the reference PyTorch models (cvtower/seesawfacenet_pytorch), counted with
# sum(p.numel() for p in model.parameters()). DW v1/v2 reference: 4,918,176, of which 671,232 belong to
# shortcuts built in residual blocks but never used in forward(); fvjax omits them.
REFERENCE_PARAMS = {
    'seesaw_shuffle': 1_370_176,
    'seesaw_share': 1_370_176,
    'dw_seesaw_v1': 4_918_176 - 671_232,
    'dw_seesaw_v2': 4_918_176 - 671_232,
    'mobilefacenet': 1_200_512,  # insightface MobileFaceNet, PReLU
}
# MAdds of convolutions + matmuls at 112x112; the papers: 146M (mobile), 526M (large), 221M (MobileFaceNet).
EXPECTED_MADDS = {
    'seesaw_shuffle': 145_762_816,
    'seesaw_share': 145_762_816,
    'dw_seesaw_v1': 526_478_592,
    'dw_seesaw_v2': 526_478_592,
    'mobilefacenet': 221_161_984,
}


def abstract_variables(module):
  return jax.eval_shape(lambda k: models.init_backbone(module, k), jax.random.key(0))


@pytest.mark.parametrize('name', models.BACKBONES)
def test_param_and_madd_counts_match_reference(name):
  module = models.backbone(name)
  variables = abstract_variables(module)
  assert models.count_params(variables) == REFERENCE_PARAMS[name]
  assert models.count_madds(module, variables, models.INPUT_SHAPE) == EXPECTED_MADDS[name]


# What the papers print (SeesawFaceNet Table 1; MobileFaceNet Table 2): params in millions, MAdds in millions.
PAPER_CLAIMS = {'seesaw_shuffle': (1.3, 146), 'dw_seesaw_v2': (4.2, 526), 'mobilefacenet': (None, 221)}


@pytest.mark.parametrize('name', sorted(PAPER_CLAIMS))
def test_built_models_match_the_papers_printed_budgets(name):
  module = models.backbone(name)
  variables = abstract_variables(module)
  params_m, madds_m = PAPER_CLAIMS[name]
  assert round(models.count_madds(module, variables, models.INPUT_SHAPE) / 1e6) == madds_m
  if params_m is not None:  # the seesaw paper truncates: 1,370,176 prints as "1.3M"
    assert int(models.count_params(variables) / 1e5) / 10 == params_m


def test_count_params_excludes_batch_stats():
  v = abstract_variables(models.backbone('seesaw_shuffle'))
  assert 'batch_stats' in v
  assert models.count_params(v) == models.count_params(v['params'])


def test_count_madds_hand_computed():
  # 3x3 conv 4->8 on 8x8 ('same'): 8*8*8 outputs x 9*4 MACs; then depthwise 3x3 stride 2: 4*4*8 x 9; then dense 128->5.
  module = _TinyNet()
  variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)), train=False)
  assert models.count_madds(module, variables, (8, 8, 4), train=False) == 8 * 8 * 8 * 36 + 4 * 4 * 8 * 9 + 128 * 5


class _TinyNet(layers.nn.Module):
  depthwise_impl: str = 'shift'

  @layers.nn.compact
  def __call__(self, x, train):
    x = layers.ConvBN(8, kernel=3)(x, train)
    x = layers.ConvBN(8, kernel=3, stride=2, depthwise=True, depthwise_impl=self.depthwise_impl)(x, train)
    return layers.nn.Dense(5, use_bias=False)(x.reshape(x.shape[0], -1))


# Batches of 2, 4, 3 and 5: the kernel gradient loops over pairs of images, or single ones when the batch is odd.
@pytest.mark.parametrize('stride,pad,k,size,batch', [(1, 1, 3, 14, 2), (2, 1, 3, 14, 4), (2, 1, 3, 13, 3),
                                                      (1, 0, 7, 7, 5), (3, 2, 5, 10, 2)])
def test_depthwise_shift_equals_grouped_conv(stride, pad, k, size, batch):
  x = jax.random.normal(jax.random.key(0), (batch, size, size, 6))
  kernel = jax.random.normal(jax.random.key(1), (k, k, 1, 6))
  conv = layers.DepthwiseConv(k, stride, pad, impl='conv')
  shift = layers.DepthwiseConv(k, stride, pad, impl='shift')
  params = {'params': {'kernel': kernel}}
  np.testing.assert_allclose(shift.apply(params, x), conv.apply(params, x), atol=1e-4, rtol=1e-4)
  g_conv = jax.grad(lambda p: jnp.sum(conv.apply(p, x) ** 2))(params)
  g_shift = jax.grad(lambda p: jnp.sum(shift.apply(p, x) ** 2))(params)
  np.testing.assert_allclose(g_shift['params']['kernel'], g_conv['params']['kernel'], atol=1e-3, rtol=1e-4)
  gx_conv = jax.grad(lambda x: jnp.sum(conv.apply(params, x) ** 2))(x)  # the custom VJP's input gradient
  gx_shift = jax.grad(lambda x: jnp.sum(shift.apply(params, x) ** 2))(x)
  np.testing.assert_allclose(gx_shift, gx_conv, atol=1e-3, rtol=1e-4)


def test_batch_norm_matches_flax_in_value_gradient_and_statistics():
  x = jax.random.normal(jax.random.key(0), (4, 5, 5, 6)) * 3 + 1
  weights = jax.random.normal(jax.random.key(1), x.shape)
  flax_bn = layers.nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  variables = flax_bn.init(jax.random.key(2), x)
  variables = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape), variables)

  def loss(apply, x, params):
    y, stats = apply({'params': params, 'batch_stats': variables['batch_stats']}, x)
    return jnp.sum(jnp.sin(y) * weights), stats

  ours = lambda v, x: layers.BatchNorm().apply(v, x, True, mutable=['batch_stats'])
  theirs = lambda v, x: flax_bn.apply(v, x, mutable=['batch_stats'])
  grad = lambda apply: jax.value_and_grad(functools.partial(loss, apply), argnums=(0, 1), has_aux=True)(
      x, variables['params'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), grad(ours), grad(theirs))


def test_channel_shuffle_hand_case():
  x = jnp.arange(6.0).reshape(1, 1, 1, 6)  # groups [0 1 2 | 3 4 5]
  np.testing.assert_array_equal(layers.channel_shuffle(x, 2)[0, 0, 0], [0, 3, 1, 4, 2, 5])


def test_activations_values():
  x = jnp.array([-4.0, -1.0, 0.0, 1.0, 4.0])
  np.testing.assert_allclose(layers.swish(x), x / (1 + np.exp(-x)), rtol=1e-6)
  np.testing.assert_allclose(layers.hard_swish(x), [0.0, -1 / 3, 0.0, 2 / 3, 4.0], rtol=1e-6)
  prelu = layers.PReLU()
  v = prelu.init(jax.random.key(0), x[None])
  np.testing.assert_allclose(prelu.apply(v, x[None])[0], [-1.0, -0.25, 0.0, 1.0, 4.0])


def test_share_and_shuffle_wire_projections_differently():
  # Same parameter shapes, different wiring: shuffle projects the first E/4 channels to O/4,
  # share projects the first 3E/4 channels to 3O/4 (no channel shuffle).
  for mix in ('shuffle', 'share'):
    block = models.seesaw.SeesawBlock(8, 16, 1, mix, 'identity')
    x = jax.random.normal(jax.random.key(0), (1, 4, 4, 8))
    v = block.init(jax.random.key(1), x, train=False)
    p = v['params']
    assert p['project_1']['conv']['kernel'].shape == (4, 2)
    assert p['project_3']['conv']['kernel'].shape == (12, 6)
  outputs = {}
  for mix in ('shuffle', 'share'):
    block = models.seesaw.SeesawBlock(8, 16, 1, mix, 'identity')
    outputs[mix] = block.apply(v, x, train=False)
  assert not np.allclose(outputs['shuffle'], outputs['share'])


def test_wrong_image_shape_is_a_clear_error():
  module = models.backbone('seesaw_shuffle')
  with pytest.raises(ValueError, match=r'\[B, 112, 112, 3\].*\(2, 96, 96, 3\)'):
    jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((2, 96, 96, 3))))
  with pytest.raises(ValueError, match='unknown backbone'):
    models.backbone('resnet50')


def test_backbone_forward_finite_and_batch_independent_in_eval():
  spec = FaceNetSpec('shuffle', 16, (Stage(16, 32, 1, 32),))
  module = FaceNet(spec, embedding_size=8)
  x = jax.random.uniform(jax.random.key(0), (3, 112, 112, 3), minval=-1, maxval=1)
  v = module.init(jax.random.key(1), x, train=False)
  full = module.apply(v, x)
  single = module.apply(v, x[1:2])
  assert full.shape == (3, 8) and full.dtype == jnp.float32
  np.testing.assert_allclose(full[1:2], single, atol=1e-5)  # eval BN uses running stats
  for impl in ('conv', 'shift'):
    np.testing.assert_allclose(module.clone(depthwise_impl=impl).apply(v, x), full, atol=1e-4)
