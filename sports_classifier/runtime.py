"""Inference engines: ONNX Runtime (fast, no TensorFlow) and Keras (always available).

Both take the output of ``images.preprocess_batch`` (float32 RGB in [0, 255]) and return the
network's outputs as numpy. ``export_onnx`` writes an ONNX copy of a Keras model and checks
that it computes the same outputs.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ExportError

BATCH = 32
RUNTIMES = ("auto", "onnx-int8", "onnx", "keras")  # what Classifier(runtime=...) and --runtime take
# ONNX Runtime batches are cut into groups of this many images, run side by side (OnnxEngine).
SUB_BATCH = 4


class Engine(Protocol):
    name: str

    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def physical_cores() -> int:
    """CPU cores this process may run on, counting hyper-threads of one core once."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        try:
            siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text()
            cores.add(siblings.strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


class _Watchdog:
    """One daemon thread for every time-limited run: it sets ``terminate`` on the options of a
    run past its deadline (checked every ``TICK`` s), so a limited run costs no thread of its own."""

    TICK = 0.25

    def __init__(self):
        self._deadlines: dict[int, tuple[object, float]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, options, seconds: float) -> None:
        with self._lock:
            self._deadlines[id(options)] = (options, time.monotonic() + seconds)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="onnxruntime-watchdog", daemon=True)
                self._thread.start()

    def forget(self, options) -> None:
        with self._lock:
            self._deadlines.pop(id(options), None)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                for options, deadline in self._deadlines.values():
                    if now >= deadline:
                        options.terminate = True


_WATCHDOG = _Watchdog()


class OnnxEngine:
    """Runs an ``.onnx`` file with ONNX Runtime on the CPU: sessions made once and reused for
    every call, full graph optimisation, memory arena on, no busy-waiting threads.

    A batch is parallel over images, not operators: it is cut into groups of ``SUB_BATCH``
    images, run at the same time on ``threads`` threads (default: the physical cores) by a
    session that runs each call on one thread (``session.run`` releases the GIL). Splitting
    every operator over the cores instead makes the threads wait for each other after each of
    the ~55 operators: on the 2-core machine that cost ~10% of the throughput (docs/benchmark.md).
    One small group (a single image) cannot be split that way, so it goes to a second session
    that does split operators over the cores (made on first use): lower latency.
    """

    name = "onnxruntime"
    time_limit: float | None = None  # seconds one run may take (None: no limit); see _timed

    def __init__(self, path: str | Path, *, threads: int | None = None):
        self.path = Path(path)
        self.threads = max(1, threads or physical_cores())
        self.session = self._new_session(1)
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = list(self.session.get_inputs()[0].shape)
        outputs = self.session.get_outputs()
        # The first output is the class probabilities; exports since 0.2 add one class-activation
        # feature map per network (``explain``), which serving never computes.
        self.output_names = [outputs[0].name]
        self.output_shape = list(outputs[0].shape)
        self.extra_outputs = [o.name for o in outputs[1:]]
        self._single = None if self.threads > 1 else self.session
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._lock = threading.Lock()

    def _new_session(self, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # a CNN is a chain of operators
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = True  # reuse activation buffers between calls
        options.enable_mem_pattern = True
        # Spinning threads answer a little faster on an idle machine but take the core that
        # decoding, a second request or another process needs: off.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors on a bad file
            from .errors import BundleError

            raise BundleError(f"{self.path} is not a valid ONNX model: {exc}") from None

    def _single_session(self):
        with self._lock:
            if self._single is None:
                self._single = self._new_session(self.threads)
            return self._single

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():  # a forked child needs its own
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnxruntime")
                self._pool_pid = os.getpid()
            return self._pool

    def _timed(self, session, names: list[str], pixels: np.ndarray) -> list[np.ndarray]:
        """``session.run``, stopped by ONNX Runtime itself (``RunOptions.terminate``, set by the
        ``_WATCHDOG``) once it has run ``time_limit`` seconds: a graph can loop for ever (a
        ``Loop`` of 10^12 steps), and a thread cannot be killed. ``ModelTimeoutError`` then."""
        if not self.time_limit:
            return session.run(names, {self.input_name: pixels})
        import onnxruntime as ort

        options = ort.RunOptions()
        _WATCHDOG.watch(options, self.time_limit)
        try:
            return session.run(names, {self.input_name: pixels}, options)
        except Exception:
            if options.terminate:
                from .errors import ModelTimeoutError

                raise ModelTimeoutError(f"{self.path.name} did not answer within {self.time_limit:g} s "
                                        "and was stopped") from None
            raise
        finally:
            _WATCHDOG.forget(options)

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        return self._timed(self.session, self.output_names, pixels)[0]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)  # no copy when it already is
        if len(pixels) <= SUB_BATCH:
            return self._timed(self._single_session(), self.output_names, pixels)[0]
        groups = [pixels[i : i + SUB_BATCH] for i in range(0, len(pixels), SUB_BATCH)]
        if self.threads == 1:
            return np.concatenate([self._run(g) for g in groups])
        return np.concatenate(list(self._executor().map(self._run, groups)))


    def run_all(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the model (probabilities and feature maps) for a small batch."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        names = self.output_names + self.extra_outputs
        return dict(zip(names, self._timed(self._single_session(), names, pixels)))


class CloseCallEngine:
    """An int8 engine whose close calls are settled by the float network.

    int8 moves each probability by a little (mean L1 ~0.02-0.04 on these networks); that flips
    the top class only where the two best classes are close. So every image whose int8 top-2
    margin is under ``margin`` is run again through the float model, and gets its answer. On
    Lite0 (500 valid images) 1-3 % of images are re-run, which costs a few per cent of int8's
    speed and brings top-1 agreement with the float network from 99.0 % to 99.8 %
    (docs/accuracy.md). The float engine is made on the first close call, so loading stays as
    fast as int8 alone. Explanations (``run_all``) come from the int8 model.
    """

    def __init__(self, fast: OnnxEngine, make_exact, *, margin: float):
        self.fast, self._make_exact, self.margin = fast, make_exact, margin
        self.name = fast.name
        self._exact = None
        self._lock = threading.Lock()
        self.images = 0
        self.close_calls = 0

    def __getattr__(self, attribute):  # threads, input_name, extra_outputs, ... of the int8 model
        return getattr(self.__dict__["fast"], attribute)

    def exact(self) -> OnnxEngine:
        with self._lock:
            if self._exact is None:
                self._exact = self._make_exact()
            return self._exact

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        probs = np.array(self.fast(pixels), copy=True)
        top2 = np.partition(probs, -2, axis=1)[:, -2:] if probs.shape[1] > 1 else None
        close = np.flatnonzero(top2[:, 1] - top2[:, 0] < self.margin) if top2 is not None else []
        if len(close):
            probs[close] = self.exact()(np.ascontiguousarray(pixels[close], dtype=np.float32))
        self.images += len(probs)
        self.close_calls += len(close)
        return probs

    def run_all(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.fast.run_all(pixels)
        first = next(iter(outputs))
        outputs[first] = self(pixels)
        return outputs


class KerasEngine:
    """Runs a Keras model batch by batch (``predict_on_batch`` skips ``predict``'s overhead)."""

    name = "keras"

    def __init__(self, model):
        self.model = model

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        outs = [
            np.asarray(self.model.predict_on_batch(pixels[i : i + BATCH]))
            for i in range(0, len(pixels), BATCH)
        ]
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def export_onnx(model, path: str | Path, *, sample: np.ndarray, atol: float = 1e-4) -> float:
    """Export ``model`` to ONNX at ``path`` and check every output against Keras on ``sample``.

    Returns the max absolute difference of the first output (the probabilities); raises
    ``ExportError`` (leaving no file) if any output differs by ``atol`` or more (relative to its
    scale for the unbounded class maps). Written to a temporary name first, so a crash leaves no
    half file.
    """
    if not onnxruntime_available():
        raise ExportError("onnxruntime is not installed: pip install onnxruntime")
    from .atomic import atomic_path

    expected = model.predict_on_batch(sample)  # also builds the model, which export requires
    expected = [np.asarray(e) for e in (expected if isinstance(expected, (list, tuple)) else [expected])]
    try:
        with atomic_path(path) as tmp:
            model.export(str(tmp), format="onnx", verbose=False)
            engine = OnnxEngine(tmp)
            got = list(engine.run_all(sample).values())
            if len(got) != len(expected):
                raise ExportError(f"ONNX export has {len(got)} outputs, the Keras model {len(expected)}")
            diffs = [float(np.max(np.abs(g - e))) / (1.0 if i == 0 else max(1.0, float(np.max(np.abs(e)))))
                     if e.size else 0.0 for i, (g, e) in enumerate(zip(got, expected))]
            worst = max(diffs)
            if not worst < atol:
                raise ExportError(f"ONNX export differs from Keras by {worst:.2e} (limit {atol:.0e})")
        return diffs[0]
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from None


def predict_files(engine: Engine, paths, image_size: int, *, batch_size: int = BATCH,
                  progress: bool = False, desc: str = "predict", warn: bool = True):
    """Run ``engine`` over image files: returns (outputs, kept rows, skipped (path, reason)).

    Unreadable files are skipped rather than ending the run, and summed up in one warning
    unless ``warn`` is False (for callers that report each file themselves).
    """
    from tqdm.auto import tqdm

    from .images import SkippedImages, iter_batches

    skipped = SkippedImages()
    outs, rows = [], []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for pixels, idx in iter_batches(list(paths), image_size, batch_size, skipped=skipped):
            outs.append(engine(pixels))
            rows.append(idx)
            bar.update(len(idx))
    if warn:
        skipped.warn(desc)
    if not outs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), skipped.items
    return np.concatenate(outs), np.concatenate(rows), skipped.items


def predict_sources(engine: Engine, sources, image_size: int, *, batch_size: int | None = None) -> np.ndarray:
    """Preprocess ``sources`` (paths, bytes, images) and run ``engine`` on them, batch by batch.

    The next batch is decoded in a background thread while the engine runs the current one,
    so decoding hides behind the network. Same pixels, same outputs as
    ``engine(preprocess_batch(sources, image_size))``; an unreadable input raises
    ``ImageDecodeError`` naming it.
    """
    from .images import preprocess_batch

    batch_size = batch_size or BATCH
    sources = list(sources)
    if len(sources) <= batch_size:
        return engine(preprocess_batch(sources, image_size))
    chunks = [sources[i : i + batch_size] for i in range(0, len(sources), batch_size)]
    outs = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending = pool.submit(preprocess_batch, chunks[0], image_size)
        for k in range(len(chunks)):
            pixels = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(preprocess_batch, chunks[k + 1], image_size)
            outs.append(engine(pixels))
    return np.concatenate(outs)
