"""regbench: paired regularization benchmarks on real MNIST and Fashion-MNIST with Keras 3.

From Python: `regbench.compare(...)`, `regbench.study(...)` and `regbench.load(DIR)` (see regbench.api); loaded on
first use, so that `import regbench` alone loads nothing else.
"""

__version__ = "0.1.0"
__all__ = ["Comparison", "Study", "UsageError", "compare", "load", "study"]


def __getattr__(name: str):
    if name in __all__:
        from regbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'regbench' has no attribute {name!r}")
