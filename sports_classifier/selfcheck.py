"""A model that checks itself where it serves.

An int8 model's answers depend on the CPU's int8 kernels (``hardware.int8_kind``). So export
stores, in the bundle, a few images (as the uint8 pixels the network takes) with the float
network's probabilities for them, and how far the int8 model was from those on the export
machine. At load, ``Classifier`` runs the images through the int8 engine it is about to serve
with (a few milliseconds) and compares:

* every image whose top class int8 and float shared at export must still share it, and
* the mean L1 distance to the float probabilities may grow by at most ``L1_SLACK``.

A model that fails (a CPU whose kernels saturate, a different ONNX Runtime, a tampered file
whose checksum was rewritten) is not served as int8: ``Classifier`` serves the bundle's float
ONNX model instead, and refuses with a ``BundleError`` when the bundle has none. Serving float
rather than refusing keeps the app up with the right answers at about 2/3 of the speed; a user
who asked for int8 explicitly (``runtime="onnx-int8"``) gets it, with a warning.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_IMAGES = 8
# Quantisation moves the probabilities a little on every CPU; saturation and tampering move them
# far more (a 2-point accuracy loss comes with a mean L1 several times this).
L1_SLACK = 0.05
MAX_REFERENCE_BYTES = 16 * 2**20  # the file; 8 images at 260 px are ~1.6 MB uncompressed
MAX_INFLATED_BYTES = 64 * 2**20  # its arrays, uncompressed


@dataclass(frozen=True)
class Reference:
    pixels: np.ndarray        # (n, h, w, 3) uint8, the network's input
    float_probs: np.ndarray   # (n, classes) float32: the float network on ``pixels``
    int8_probs: np.ndarray    # (n, classes) float32: the int8 model on ``pixels`` at export
    measured_on: dict         # hardware.measured_on() of the export machine

    @property
    def agreed(self) -> np.ndarray:
        """Images whose top class int8 and float shared at export."""
        return self.int8_probs.argmax(1) == self.float_probs.argmax(1)

    @property
    def export_l1(self) -> float:
        return _mean_l1(self.int8_probs, self.float_probs)


@dataclass(frozen=True)
class SelfCheck:
    """The outcome of running the references on this machine's engine."""

    passed: bool
    images: int
    top1_kept: int            # images that kept the top class they had at export
    top1_expected: int
    mean_l1: float            # here
    export_l1: float          # on the export machine
    ms: float

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"self-check {verdict}: {self.top1_kept}/{self.top1_expected} reference images keep "
                f"their top class, mean L1 distance to the float network {self.mean_l1:.3f} "
                f"(export machine {self.export_l1:.3f}, allowed {self.export_l1 + L1_SLACK:.3f}); "
                f"{self.ms:.0f} ms")

    def to_dict(self) -> dict:
        return {"passed": self.passed, "images": self.images, "top1_kept": self.top1_kept,
                "top1_expected": self.top1_expected, "mean_l1": round(self.mean_l1, 4),
                "export_l1": round(self.export_l1, 4), "ms": round(self.ms, 1)}


def _mean_l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).sum(1).mean())


def make_reference(pixels: np.ndarray, float_engine, int8_engine) -> Reference:
    """References for ``pixels`` (float or uint8 in [0, 255]): rounded to uint8 first, so the
    stored pixels are exactly what was measured."""
    from .hardware import measured_on

    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    as_float = pixels.astype(np.float32)
    return Reference(pixels, np.asarray(float_engine(as_float), np.float32),
                     np.asarray(int8_engine(as_float), np.float32), measured_on())


def write(reference: Reference, dest: str | Path) -> None:
    np.savez_compressed(dest, pixels=reference.pixels, float_probs=reference.float_probs,
                        int8_probs=reference.int8_probs,
                        measured_on=np.frombuffer(json.dumps(reference.measured_on).encode(), np.uint8))


def read(file: str | Path) -> Reference:
    """Load a reference file; ``BundleError`` for anything malformed (it is untrusted input)."""
    from .errors import BundleError

    file = Path(file)
    if file.stat().st_size > MAX_REFERENCE_BYTES:
        raise BundleError(f"{file} is {file.stat().st_size} bytes, over the {MAX_REFERENCE_BYTES} "
                          "a self-check reference may be")
    raw = file.read_bytes()
    try:  # a small .npz can inflate to gigabytes: its members' sizes are checked before any is read
        inflated = sum(info.file_size for info in zipfile.ZipFile(io.BytesIO(raw)).infolist())
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{file} is not a self-check reference ({exc})") from None
    if inflated > MAX_INFLATED_BYTES:
        raise BundleError(f"{file} inflates to {inflated} bytes, over the {MAX_INFLATED_BYTES} a self-check "
                          "reference may hold")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            pixels, float_probs, int8_probs = data["pixels"], data["float_probs"], data["int8_probs"]
            where = json.loads(bytes(data["measured_on"]).decode())
    except Exception as exc:  # zip, npy and JSON errors alike: the file is not what export wrote
        raise BundleError(f"{file} is not a self-check reference ({type(exc).__name__}: {exc})") from None
    n = len(pixels)
    if (pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3 or not 0 < n <= 64
            or float_probs.shape != int8_probs.shape or float_probs.shape[0] != n):
        raise BundleError(f"{file} holds arrays of unexpected shapes {pixels.shape}, {float_probs.shape}, "
                          f"{int8_probs.shape}")
    return Reference(pixels, float_probs.astype(np.float32), int8_probs.astype(np.float32),
                     where if isinstance(where, dict) else {})


def run(engine, reference: Reference) -> SelfCheck:
    """Run the references through ``engine`` (the one about to serve) and judge it."""
    start = time.perf_counter()
    got = np.asarray(engine(reference.pixels.astype(np.float32)), np.float32)
    ms = (time.perf_counter() - start) * 1e3
    if got.shape != reference.float_probs.shape or not np.all(np.isfinite(got)):
        return SelfCheck(False, len(got), 0, int(reference.agreed.sum()), float("inf"), reference.export_l1, ms)
    agreed = reference.agreed
    kept = int((got.argmax(1) == reference.float_probs.argmax(1))[agreed].sum())
    l1 = _mean_l1(got, reference.float_probs)
    passed = kept == int(agreed.sum()) and l1 <= reference.export_l1 + L1_SLACK
    return SelfCheck(passed, len(got), kept, int(agreed.sum()), l1, reference.export_l1, ms)
