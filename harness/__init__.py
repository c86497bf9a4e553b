"""harness: a GPU-aware benchmarking harness for local LLM inference."""

__version__ = "0.1.0"
