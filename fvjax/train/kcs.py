"""K-means Centred Sampling (KCS): hard-negative user batches for hypernetwork training.

Identities are clustered by their mean backbone embedding (k-means, in JAX);
each training batch draws all its users from one cluster, so every user's
negatives (the other users' images) are look-alikes. Rozner et al. (FG 2024).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.train import features as features_lib


def assign(points: jax.Array, centroids: jax.Array) -> jax.Array:
  """Index [N] of the nearest centroid [K, D] (squared Euclidean) of each point [N, D]; ties to the lower index."""
  d2 = (jnp.sum(points**2, 1)[:, None] - 2 * points @ centroids.T + jnp.sum(centroids**2, 1)[None, :])
  return jnp.argmin(d2, axis=1)


def kmeans_plus_plus(points: jax.Array, k: int, rng: jax.Array) -> jax.Array:
  """k-means++ seeding: each next centre drawn with probability proportional to D^2. -> [k, D]."""
  keys = jax.random.split(rng, k)
  first = points[jax.random.randint(keys[0], (), 0, points.shape[0])]
  d2 = jnp.sum((points - first)**2, axis=1)

  def pick(i, carry):
    centroids, d2 = carry
    centre = points[jax.random.categorical(keys[i], jnp.log(jnp.maximum(d2, 1e-30)))]
    return centroids.at[i].set(centre), jnp.minimum(d2, jnp.sum((points - centre)**2, axis=1))

  init = jnp.zeros((k, points.shape[1]), points.dtype).at[0].set(first)
  return jax.lax.fori_loop(1, k, pick, (init, d2))[0]


@functools.partial(jax.jit, static_argnames=('k', 'iterations'))
def kmeans(points: jax.Array, k: int, rng: jax.Array, iterations: int = 50) -> tuple[jax.Array, jax.Array]:
  """Lloyd's k-means from k-means++ seeds. Returns (centroids [k, D], assignment [N]).

  A cluster that empties keeps its previous centroid.
  """
  if not 0 < k <= points.shape[0]:
    raise ValueError(f'k={k} clusters for {points.shape[0]} points')
  init = kmeans_plus_plus(points, k, rng)

  def step(_, centroids):
    one_hot = jax.nn.one_hot(assign(points, centroids), k, dtype=points.dtype)  # [N, k]
    counts = one_hot.sum(0)
    means = (one_hot.T @ points) / jnp.maximum(counts, 1)[:, None]
    return jnp.where(counts[:, None] > 0, means, centroids)

  centroids = jax.lax.fori_loop(0, iterations, step, init)
  return centroids, assign(points, centroids)


def identity_centroids(features: np.ndarray, image_indices: np.ndarray, labels: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(identities [I], L2-normalised mean embedding per identity [I, C]) of the images `image_indices`.

  features: the backbone's raw features [N, 2, C] (`fvjax.train.features`, a memmap), read in chunks;
  labels [n]: the identity of each of the n images.
  """
  identities, inverse = np.unique(labels, return_inverse=True)
  sums = np.zeros((len(identities), features.shape[-1]), np.float64)
  for chunk in features_lib.chunked(np.arange(len(image_indices))):
    np.add.at(sums, inverse[chunk], features_lib.embeddings(features, image_indices[chunk]))
  return identities, sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def kcs_batch(cluster_of: np.ndarray, users_per_batch: int, rng: np.random.Generator) -> np.ndarray:
  """Positions (into `cluster_of`) of `users_per_batch` distinct identities, all of one cluster.

  The cluster is drawn with probability proportional to its size among clusters large enough.
  """
  clusters, sizes = np.unique(cluster_of, return_counts=True)
  eligible = sizes >= users_per_batch
  if not eligible.any():
    raise ValueError(f'no cluster holds {users_per_batch} identities (largest: {sizes.max()}); use fewer clusters')
  cluster = rng.choice(clusters[eligible], p=sizes[eligible] / sizes[eligible].sum())
  return rng.choice(np.flatnonzero(cluster_of == cluster), users_per_batch, replace=False)
