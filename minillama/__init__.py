"""minillama: Llama built from scratch, one lesson at a time, and run fast on a CPU."""

__version__ = "0.1.0"
