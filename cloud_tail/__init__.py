"""The cloud side: decode activations, finish inference, report latency, aggregate fleet telemetry."""
