"""mnist_mlp's model and recipe as a competent plain-Keras script: the other side of compare_mnist.py's
whole-process pairs (`nntrain train --experiment=mnist_mlp` timed from start to exit against this file).

  python benchmarks/mnist_keras_script.py MNIST_DIR STEPS_PER_EXECUTION

The official MNIST test set's first 8,000 images to train and last 2,000 to validate (the Makefile's MNIST_FLAGS),
Dense 256-128-10 ReLU, Adam 5e-3 with cosine decay to 0 over all steps, batch 128, 10 epochs, a cached, shuffled
(reshuffled every epoch), batched, vectorised-map, prefetched tf.data pipeline, validation every epoch, one log
line per epoch; no checkpoints, no TensorBoard, nothing saved. Imports nothing of nntrain.
"""

import gzip
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

TRAIN, BATCH, EPOCHS, LEARNING_RATE = 8000, 128, 10, 5e-3


def idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = np.frombuffer(data[4:4 + 4 * ndim], dtype=">u4").astype(int)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main(mnist_dir: str, steps_per_execution: int) -> None:
    images = idx(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"))
    labels = idx(os.path.join(mnist_dir, "t10k-labels-idx1-ubyte.gz")).astype(np.int32)

    def scale(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(x, tf.float32) / 255.0, y

    train = (tf.data.Dataset.from_tensor_slices((images[:TRAIN], labels[:TRAIN])).cache().shuffle(TRAIN)
             .batch(BATCH).map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    evaluation = (tf.data.Dataset.from_tensor_slices((images[TRAIN:], labels[TRAIN:])).batch(BATCH).cache()
                  .map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(256, activation="relu"), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, math.ceil(TRAIN / BATCH) * EPOCHS)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    model.fit(train, epochs=EPOCHS, validation_data=evaluation, verbose=2)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
