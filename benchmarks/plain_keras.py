"""The reference: MNIST with a plain tf.keras script, as a course writes it (run by speed.py).

Usage: python plain_keras.py MNIST_NPZ SEED EPOCHS  -> prints one JSON line of results last.
"""

import json
import sys
import time

started = time.perf_counter()
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

path, seed, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tf.keras.utils.set_random_seed(seed)
with np.load(path) as data:
    x_train, y_train = data["x_train"] / 255.0, data["y_train"]
    x_test, y_test = data["x_test"] / 255.0, data["y_test"]
x_train, x_val = x_train[:50_000].reshape(-1, 784), x_train[50_000:].reshape(-1, 784)
y_train, y_val = y_train[:50_000], y_train[50_000:]
x_test = x_test.reshape(-1, 784)

model = tf.keras.Sequential([
    tf.keras.Input(shape=(784,)),
    tf.keras.layers.Dense(128, activation="relu"),
    tf.keras.layers.Dense(64, activation="relu"),
    tf.keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
fit_started = time.perf_counter()
model.fit(x_train, y_train, batch_size=32, epochs=epochs, validation_data=(x_val, y_val))
fit_seconds = time.perf_counter() - fit_started
test_loss, test_accuracy = model.evaluate(x_test, y_test)
print(json.dumps({"seed": seed, "epochs": epochs, "fit_seconds": fit_seconds, "test_accuracy": test_accuracy,
                  "process_seconds": time.perf_counter() - started}))
