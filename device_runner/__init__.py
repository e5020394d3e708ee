"""The camera side: LiteRT heads, early exit, dynamic cut (LiteRT + numpy + paho only, never TensorFlow)."""
