"""fvjax: efficient face verification in JAX/Flax (SeesawFaceNet, hypernetwork personal verifiers, FaceCoresetNet)."""

__version__ = '0.2.0'
