"""evalsuite: accuracy, latency and memory of LLMs in one reproducible run."""

__version__ = "0.1.0"
