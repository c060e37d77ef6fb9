"""Samples/s of cached fine-tuning's training step: the last stages + head of a backbone
(``training.subnetworks.upper_model``) on cached-activation-shaped inputs, in float32, Keras'
``mixed_bfloat16`` policy, or with XLA (docs/accuracy.md, "Where the hour goes").

    python scripts/bench_finetune.py --backbone efficientnet_lite2 --stages 2 --mode fp32
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite2")
    parser.add_argument("--stages", type=int, default=2, help="trainable last stages (as --fine-tune-stages)")
    parser.add_argument("--mode", choices=("fp32", "bf16", "xla"), default="fp32")
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()

    import keras

    from sports_classifier.models.network import build_classifier, split_layer
    from sports_classifier.training.subnetworks import set_trainable, upper_model

    if args.mode == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_classifier(args.backbone, 100, weights="imagenet")
    split = split_layer(model, args.backbone, args.stages)
    set_trainable(model, split)
    upper = upper_model(model, split)
    upper.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                  jit_compile=args.mode == "xla")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32 * args.batches,) + tuple(upper.input.shape[1:])).astype(np.float32)
    y = keras.utils.to_categorical(np.arange(len(x)) % 100, 100)
    upper.fit(x[:320], y[:320], batch_size=32, epochs=1, verbose=0)  # build, trace, warm up
    start = time.perf_counter()
    upper.fit(x, y, batch_size=32, epochs=1, verbose=0)
    print(f"{args.backbone}, last {args.stages} stages, input {tuple(upper.input.shape[1:])}, {args.mode}: "
          f"{len(x) / (time.perf_counter() - start):.1f} samples/s")


if __name__ == "__main__":
    main()
