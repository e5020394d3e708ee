"""Keras model -> verified bundle of int8 heads, float tails and early exits (needs TensorFlow)."""
