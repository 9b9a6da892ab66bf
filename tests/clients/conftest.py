"""Client-library tests: Keras 3 runs on the JAX backend (set before keras is first imported)."""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
