"""rbmsearch: find the RNN-RBM that models your polyphonic music best, and hear what it plays.

The stages, each a module and a command (`rbmsearch STAGE ...` or `python -m rbmsearch.STAGE`):
data -> train -> evaluate -> tune -> render -> gallery; see README.md. Importing this package
is cheap: TensorFlow, Ray and Optuna load only when a stage needs them.
"""

__version__ = "0.2.0"

__all__ = ["__version__"]
