"""splitedge's shared core: wire format, latency model and planner, bundle schema, config, errors.

Nothing here imports TensorFlow; paho and LiteRT are imported only inside their adapters.
"""

__version__ = "0.1.0"
