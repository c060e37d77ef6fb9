"""Training-only input pipelines: the notebook's augmentation as Keras preprocessing layers, and
a ``tf.data`` pipeline for end-to-end training (decoding through the shared ``images`` path)."""

from __future__ import annotations

import random

import numpy as np

from ..images import SkippedImages, iter_batches


def augmentation(*, zoom: float, shift: float, horizontal_flip: bool, seed: int):
    """The notebook's training-only augmentation (zoom, flip, shift) as Keras layers."""
    import keras

    layers = []
    if horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if shift:
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed + 1))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, zoom, fill_mode="nearest", seed=seed + 2))
    return keras.Sequential(layers, name="augmentation")


class BatchAugmentation:
    """A cached view's augmentation as a pure function of the batch's position.

    ``augment(pixels, batch_number)`` draws exactly what the ``batch_number``-th call of a fresh
    ``augmentation(...)`` draws (Keras' seeded layers keep a ``[seed, counter]`` state that each
    call advances by a fixed step), whatever this object augmented before. So any worker of a
    cluster can augment any batch and the feature cache is the same whoever computed it, and a
    sequential pass over the batches gives the pixels it always gave.
    """

    def __init__(self, *, zoom: float, shift: float, horizontal_flip: bool, seed: int):
        self.layers = augmentation(zoom=zoom, shift=shift, horizontal_flip=horizontal_flip, seed=seed)
        self.generators = [layer.generator for layer in self.layers.layers]
        self.initial = [np.asarray(g.state.value).copy() for g in self.generators]
        self.layers(np.zeros((1, 8, 8, 3), np.float32), training=True)  # measure one call's step
        self.steps = [int(np.asarray(g.state.value)[1] - s[1]) for g, s in zip(self.generators, self.initial)]

    def __call__(self, pixels: np.ndarray, batch_number: int) -> np.ndarray:
        for generator, initial, step in zip(self.generators, self.initial, self.steps):
            state = initial.copy()
            state[1] += batch_number * step
            generator.state.assign(state)
        return np.asarray(self.layers(pixels, training=True))


def make_tf_dataset(
    frame, *, image_size: int, batch_size: int = 32, training: bool = False, seed: int = 42,
    augment_layers=None, skipped: SkippedImages | None = None, shard: tuple[int, int] | None = None,
    epoch: list[int] | None = None,
):
    """A ``tf.data`` pipeline of ``(pixels, class_index)`` batches.

    Decoding goes through the shared preprocessing (so train and serve see the same pixels);
    in training the order is reshuffled every epoch and ``augment_layers`` are applied.
    ``epoch``: a one-item list the caller keeps at the current epoch (a callback), so that a
    resumed run shuffles its epochs as the uninterrupted run did; without it, each pass over
    the data counts as the next epoch.

    ``shard=(rank, workers)``: data-parallel training under ``MultiWorkerMirroredStrategy``.
    ``batch_size`` is the global batch. In training this worker decodes only its
    ``batch_size / workers`` slice of each global batch (every worker shuffles alike; the last,
    incomplete global batch is dropped so that all take the same steps); its dataset still
    batches by ``batch_size``, because ``tf.distribute`` cuts every worker's batch into
    ``workers`` per-step pieces. Validation is not split: each worker measures all of it, so
    every worker computes the same ``val_loss`` and EarlyStopping / ReduceLROnPlateau decide
    alike on every worker.
    """
    import tensorflow as tf

    paths = frame["filepath"].tolist()
    labels = frame["class_index"].to_numpy(np.int64)
    counted = epoch is None
    epoch = [0] if epoch is None else epoch
    rank, workers = shard or (0, 1)
    if batch_size % workers:
        from ..errors import ConfigError

        raise ConfigError(f"the global batch size {batch_size} does not split evenly over {workers} workers")
    local = batch_size // workers

    def generate():
        order = list(range(len(paths)))
        if training:
            random.Random(seed + epoch[0]).shuffle(order)
            if counted:
                epoch[0] += 1
        if workers > 1 and training:
            end = len(order) - len(order) % batch_size
            order = [i for start in range(0, end, batch_size)
                     for i in order[start + rank * local : start + (rank + 1) * local]]
        ordered = [paths[i] for i in order]
        for pixels, idx in iter_batches(ordered, image_size, batch_size, skipped=skipped):
            yield pixels, labels[np.asarray(order)[idx]]

    ds = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None, image_size, image_size, 3), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        ),
    )
    if workers > 1:  # already this worker's part: tf.distribute must not shard it again
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = ds.with_options(options)
    if training and augment_layers is not None:
        ds = ds.map(lambda x, y: (augment_layers(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
