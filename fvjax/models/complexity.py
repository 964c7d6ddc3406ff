"""Exact parameter and multiply-add counts.

`count_madds` counts multiply-accumulates (MAdds, the unit of the mobile
face-recognition papers) of every convolution and matrix product in the traced
computation, exactly, by walking its jaxpr. Element-wise work (BatchNorm,
activations, pooling, additions) is not counted, as in the papers' tables.
"""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core


def count_params(variables: Any) -> int:
  """Number of trainable scalars: the 'params' collection only (BatchNorm statistics excluded)."""
  params = variables.get('params', variables) if isinstance(variables, dict) else variables
  return sum(int(math.prod(x.shape)) for x in jax.tree.leaves(params))


def count_madds_of(fn: Callable[..., Any], *args: Any) -> int:
  """Multiply-accumulates of convolutions and dot products in `fn(*args)` (exact)."""
  return _jaxpr_madds(jax.make_jaxpr(fn)(*args).jaxpr)


def count_madds(module: Any, variables: Any, input_shape: tuple[int, ...], **apply_kwargs: Any) -> int:
  """MAdds of one inference forward pass of `module` on a single input of `input_shape` (no batch dim).

  Modules with a `depthwise_impl` switch are traced with native convolutions,
  so depthwise products are counted whichever form runs on this backend.
  """
  if hasattr(module, 'depthwise_impl'):
    module = module.clone(depthwise_impl='conv')
  x = jnp.zeros((1, *input_shape), jnp.float32)
  return count_madds_of(lambda v, x: module.apply(v, x, **apply_kwargs), variables, x)


def _eqn_madds(eqn) -> int:
  name = eqn.primitive.name
  if name == 'conv_general_dilated':
    lhs, rhs = (v.aval for v in eqn.invars)
    out = eqn.outvars[0].aval
    out_features_dim = eqn.params['dimension_numbers'].rhs_spec[0]
    return int(math.prod(out.shape) * math.prod(rhs.shape) // rhs.shape[out_features_dim])
  if name == 'dot_general':
    lhs = eqn.invars[0].aval
    (lhs_contract, _), _ = eqn.params['dimension_numbers']
    out = eqn.outvars[0].aval
    return int(math.prod(out.shape) * math.prod(lhs.shape[d] for d in lhs_contract))
  return 0


def _jaxpr_madds(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    total += _eqn_madds(eqn)
    repeat = eqn.params.get('length', 1) if eqn.primitive.name == 'scan' else 1
    for sub in _sub_jaxprs(eqn.params):
      total += repeat * _jaxpr_madds(sub)
  return total


def _sub_jaxprs(params: dict) -> list:
  subs = []
  for value in params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(v, jex_core.ClosedJaxpr):
        subs.append(v.jaxpr)
      elif isinstance(v, jex_core.Jaxpr):
        subs.append(v)
  return subs
