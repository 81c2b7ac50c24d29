"""cat-serve: calibrated reasoning at inference time, on vLLM."""

__version__ = "0.1.0"
