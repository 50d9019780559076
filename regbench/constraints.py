"""Weight constraints the techniques apply after every training step."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="regbench")
class ExactMaxNorm(keras.constraints.Constraint):
    """A max-norm constraint that scales a unit's incoming weights to norm `max_value` only where their norm
    exceeds it, and leaves every other unit's weights bit for bit as they are. (Keras' MaxNorm multiplies every
    unit by min(|w|, c) / (1e-7 + |w|), which moves weights it does not bind.)"""

    def __init__(self, max_value: float, axis=0):
        self.max_value, self.axis = max_value, axis

    def __call__(self, w):
        norms = keras.ops.sqrt(keras.ops.sum(keras.ops.square(w), axis=self.axis, keepdims=True))
        return w * keras.ops.where(norms > self.max_value, self.max_value / norms, keras.ops.ones_like(norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}
