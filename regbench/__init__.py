"""regbench: paired regularization benchmarks on real MNIST and Fashion-MNIST with Keras 3."""

__version__ = "0.1.0"
