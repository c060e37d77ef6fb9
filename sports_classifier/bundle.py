"""The on-disk model bundle: the module that knows its file names and how they are read and written.

A bundle is a folder (the same locally and on the Hub):

    config.json           ModelConfig: rebuild the network offline; labels; SHA-256 of the model files
    model.weights.h5      Keras weights (rebuilt from config, then loaded: no pickles, no code)
    model.onnx            optional ONNX export of the same network (fast serving, no TensorFlow);
                          its weights may be stored as float16 (it still computes in float32)
    model.int8.onnx       optional int8-quantised copy of model.onnx (served by default when present)
    selfcheck.npz         with model.int8.onnx: reference images and the float network's answers,
                          run at load to check the int8 model on this CPU (selfcheck.py)
    metrics.json          per split: n, accuracy, top-5, macro F1, loss, per-class scores
    history.csv           training curves per epoch and stage
    curves.png, confusion_matrix.png, samples.png
    README.md             the model card, generated from config.json and metrics.json

Bundle policy lives here and only here (``tests/unit/test_bundle_policy_hsec.py`` forbids
these file names elsewhere): which file serves a runtime (``serving_file``), how a file is read
(``member``: a regular file inside the bundle, under its size cap), how a bundle is written.

Writes are atomic: everything goes to a temporary folder beside the target, which then takes
the target's place, so a crash leaves the old bundle or the new one, never a mix; a single file
changed in place is replaced atomically (``atomic.py``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from . import atomic
from .config import ModelConfig
from .errors import BundleError, ConfigError, UnknownBackboneError, UserInputError

CONFIG = "config.json"
WEIGHTS = "model.weights.h5"
ONNX = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
SELFCHECK = "selfcheck.npz"
METRICS = "metrics.json"
HISTORY = "history.csv"
CURVES = "curves.png"
CONFUSION = "confusion_matrix.png"
SAMPLES = "samples.png"
CARD = "README.md"
CHECKSUMMED = (WEIGHTS, ONNX, ONNX_INT8, SELFCHECK)
FILES = (CONFIG, WEIGHTS, ONNX, ONNX_INT8, SELFCHECK, METRICS, HISTORY, CURVES, CONFUSION, SAMPLES, CARD)
# What serving reads besides the model file: the config, the metrics and the pictures the app's
# Compare tab shows. A Hub download for serving and a Space's preload list are exactly these
# (those the repo has) plus ``serving_file``: never the Keras weights an ONNX model does not use.
SERVING_EXTRAS = (CONFIG, METRICS, CURVES, CONFUSION)
# Served with the int8 model: its self-check reference, read at load, and the float ONNX model
# that settles close calls and serves where the check fails.
INT8_COMPANIONS = (SELFCHECK, ONNX)
# The most bytes a reader accepts of each file it parses or serves whole, checked before it is
# read (JSON bombs: a 28 MB config.json took 2.2 GB and 16 s to parse). Real bundles are far
# below: 100 classes give a 13 KB config.json and a 250 KB metrics.json; a self-check reference
# (8 images) about 1 MB.
MAX_BYTES = {CONFIG: 1 << 20, METRICS: 8 << 20, HISTORY: 2 << 20, CARD: 1 << 20,
             CURVES: 16 << 20, CONFUSION: 16 << 20, SAMPLES: 16 << 20, SELFCHECK: 16 << 20}

Writer = Callable[[Path], None]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def member(folder: str | Path, name: str) -> Path | None:
    """``folder / name`` once checked, None when there is no such file.

    Every read of a bundle file goes through here. A bundle is untrusted input: a symlink in it
    pointing outside the bundle (``curves.png -> ~/.ssh/id_rsa``) would otherwise have the app
    serve that file, the About tab show it, or a push publish it. Links that stay inside the
    bundle are followed. The Hub cache stores a snapshot's files as links into the repo's
    ``blobs/`` folder, so for a folder inside ``.../snapshots/`` that folder counts as inside.

    Raises ``BundleError`` for a link leaving the bundle, a name that is not a regular file,
    or a file over its size cap (``MAX_BYTES``).
    """
    folder = Path(folder)
    path = folder / name
    if not path.is_symlink() and not path.exists():
        return None
    try:
        real = path.resolve(strict=True)
        home = folder.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # dangling link, link loop
        raise BundleError(f"{path} is a broken link ({exc.__class__.__name__}); the bundle is corrupt") from None
    inside = [home]
    if home.parent.name == "snapshots":  # huggingface_hub's cache: snapshots/<rev>/<file> -> ../../blobs/<hash>
        inside.append(home.parent.parent / "blobs")
    if not any(real.is_relative_to(root) for root in inside):
        raise BundleError(f"{path} is a link to a file outside the bundle; refusing to read it")
    if not real.is_file():
        raise BundleError(f"{path} is not a regular file")
    cap = MAX_BYTES.get(name)
    size = real.stat().st_size
    if cap is not None and size > cap:
        raise BundleError(f"{path} is {size / 2**20:.1f} MB; a bundle's {name} is at most "
                          f"{cap / 2**20:.0f} MB: refusing to read it")
    return path  # its own name: Keras wants weights files to end in .weights.h5 (Hub blobs do not)


def member_or_none(folder: str | Path, name: str) -> Path | None:
    """``member`` for optional extras (pictures, sizes): a refused file counts as absent."""
    try:
        return member(folder, name)
    except BundleError:
        return None


def read_json(file: Path):
    """Parse a bundle's JSON file; ``BundleError`` for anything that is not JSON (invalid, not
    UTF-8, or nested deeply enough to exhaust Python's recursion limit)."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{file} is not valid JSON ({exc}); the bundle is corrupt") from None
    except RecursionError:
        raise BundleError(f"{file} is nested too deeply to be a bundle file; the bundle is corrupt") from None


def read_history(path: str | Path):
    """history.csv as a DataFrame; None when absent. ``BundleError`` for a file that is not a
    UTF-8 CSV (or any refusal of ``member``)."""
    file = member(path, HISTORY)
    if file is None:
        return None
    import pandas as pd

    try:
        return pd.read_csv(file, encoding="utf-8")
    except (UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise BundleError(f"{file} is not a readable CSV file ({type(exc).__name__}); the bundle is corrupt") from None


def copy_from(source: Path) -> Writer:
    return lambda dest: shutil.copyfile(source, dest)


def write_bundle(dest: str | Path, config: ModelConfig, writers: dict[str, Writer]) -> Path:
    """Write a bundle atomically. ``writers`` map bundle file names to functions that write
    that file at the path they are given; config.json (with checksums) and the model card
    are written last, from the files just written."""
    from .card import render_model_card

    dest = Path(dest).resolve()
    unknown = sorted(set(writers) - set(FILES))
    if unknown:
        raise BundleError(f"not bundle files: {unknown}; a bundle holds {list(FILES)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    try:
        for name, write in writers.items():
            if name not in (CONFIG, CARD):
                write(tmp / name)
        checksums = {n: sha256_file(tmp / n) for n in CHECKSUMMED if (tmp / n).is_file()}
        config = config.replace(files_sha256=checksums)
        _write_json(tmp / CONFIG, config.to_dict())
        metrics = json.loads((tmp / METRICS).read_text()) if (tmp / METRICS).is_file() else {}
        present = sorted(p.name for p in tmp.iterdir())
        (tmp / CARD).write_text(render_model_card(config.to_dict(), metrics, files=present))
        _swap_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def remove_stale_temporaries(dest: Path) -> list[Path]:
    """Delete ``.NAME.tmp-PID-*`` folders beside ``dest`` left by a save that was killed (a
    whole bundle each). Only those whose process is gone: a save running now keeps its own."""
    removed = []
    for tmp in dest.parent.glob(f".{dest.name}.tmp-*"):
        pid = tmp.name[len(f".{dest.name}.tmp-"):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)) or not tmp.is_dir() or tmp.is_symlink():
            continue  # older saves named no PID: left alone, since one may be running
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _write_json(path: Path, data) -> None:
    atomic.write_json(path, data)


def check_destination(dest: str | Path) -> None:
    """Refuse a destination a bundle may not replace (a file, a folder that is not a bundle):
    training calls this before its first epoch, not after its last."""
    dest = Path(dest)
    if dest.is_file() or (dest.is_dir() and any(dest.iterdir()) and not (dest / CONFIG).is_file()):
        raise BundleError(f"{dest} exists and is not a model bundle; refusing to overwrite it")


def _swap_into_place(new: Path, dest: Path) -> None:
    if not dest.exists():
        os.replace(new, dest)
        return
    check_destination(dest)
    if _exchange(new, dest):  # one atomic step: dest holds the new bundle, ``new`` the old one
        shutil.rmtree(new, ignore_errors=True)
        return
    # Two renames: a crash between them leaves no bundle at dest, the old one beside it
    # (read_config then says where).
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def read_config(path: str | Path) -> ModelConfig:
    """Read and validate ``config.json`` of the bundle at ``path``."""
    path = Path(path)
    if not path.exists():
        left = sorted(path.parent.glob(f".{path.name}.old-*")) if path.name else []
        hint = (f" (a save was interrupted: the previous bundle is at {left[-1]}; rename it to {path.name})"
                if left else "")
        raise BundleError(f"model bundle not found: {path}{hint}")
    if not path.is_dir():
        raise BundleError(f"{path} is a file; a model bundle is a folder holding {CONFIG}")
    cfg = member(path, CONFIG)
    if cfg is None:
        # its other files are not listed: the app shows this message to everyone
        raise BundleError(f"{path} is not a sports_classifier bundle: it has no {CONFIG}")
    data = read_json(cfg)
    cfg = path / CONFIG  # named as the user knows it in messages
    try:
        config = ModelConfig.from_dict(data)
    except ConfigError as exc:
        raise BundleError(f"{cfg}: {exc}") from None
    from .models.backbones import get_backbone  # names only: no Keras import

    try:  # the network is rebuilt from the backbone catalogue by name, never from code in the bundle
        for name in config.backbones:
            get_backbone(name)
    except UnknownBackboneError as exc:
        raise BundleError(
            f"{cfg} names a backbone this version of sports_classifier cannot build ({exc}); "
            "the bundle was written by another version or was modified"
        ) from None
    return config


def update_config(path: str | Path, **changes) -> ModelConfig:
    """Change fields of a bundle's config.json that no checksum covers (the out-of-distribution
    threshold), atomically, and rewrite the model card to match."""
    path = Path(path)
    config = read_config(path).replace(**changes)
    atomic.write_json(path / CONFIG, config.to_dict())
    _rewrite_card(path, config, read_metrics(path))
    return config


def update_metrics(path: str | Path, split: str, measured: dict) -> dict:
    """Store ``measured`` (``Classifier.evaluate``'s result) as the bundle's figures for ``split``,
    atomically, and rewrite the model card to match. An earlier entry measured with another
    engine (the float network at training time, before an int8 export) is kept beside it as
    ``"<split> (<engine>)"``, so the card shows both and every reader of ``split`` (the app's
    Compare tab, ``bench``) sees the model as it is served. Returns the new metrics."""
    path = Path(path)
    metrics = read_metrics(path)
    earlier = metrics.get(split)
    if earlier and earlier.get("engine") and earlier.get("engine") != measured.get("engine"):
        metrics[f"{split} ({earlier['engine']})"] = earlier
    metrics[split] = {k: v for k, v in measured.items() if k != "skipped"}
    atomic.write_json(path / METRICS, metrics)
    _rewrite_card(path, read_config(path), metrics)
    return metrics


def _rewrite_card(path: Path, config: ModelConfig, metrics: dict) -> None:
    """The model card regenerated from what the bundle now holds."""
    from .card import render_model_card

    present = sorted(p.name for p in path.iterdir())
    atomic.write_text(path / CARD, render_model_card(config.to_dict(), metrics, files=present))


def verified_file(path: str | Path, config: ModelConfig, name: str) -> Path:
    """The path of a checksummed bundle file, after checking it exists and is intact."""
    file = member(path, name)
    if file is None:
        raise BundleError(f"{path} lacks {name}; the bundle is incomplete (re-download or re-save it)")
    expected = config.files_sha256.get(name)
    if expected is None:
        raise BundleError(f"{path}/{CONFIG} records no SHA-256 for {name}; re-save the bundle")
    actual = sha256_file(file)
    if actual != expected:
        raise BundleError(
            f"{file} is corrupt or was modified: SHA-256 {actual[:12]}... != recorded {expected[:12]}..."
        )
    return file


def has_onnx(path: str | Path, config: ModelConfig) -> bool:
    return member_or_none(path, ONNX) is not None and ONNX in config.files_sha256


RUNTIME_FILES = {"onnx-int8": ONNX_INT8, "onnx": ONNX, "keras": WEIGHTS}


def serving_file(config: ModelConfig, runtime: str = "auto", *, folder: str | Path | None = None,
                 onnxruntime_ok: bool | None = None) -> str:
    """The one model file serving this bundle with ``runtime`` reads: the question every
    reader asks (``Classifier``, the Hub download, a Space's preload list, ``bench``, Compare's
    sizes), answered here only.

    ``auto``: the int8 ONNX model when ``config.json`` records it, else the float ONNX model,
    else the Keras weights; ONNX files only when onnxruntime is installed (``onnxruntime_ok``,
    default: checked). With ``folder`` a recorded file must also be there (a local bundle);
    without it (a Hub repo not yet downloaded) the record decides. An explicit runtime names
    its file, present or not: loading it then says what is missing.
    """
    if runtime in RUNTIME_FILES:
        return RUNTIME_FILES[runtime]
    if runtime != "auto":
        raise UserInputError(f"runtime must be auto or one of {tuple(RUNTIME_FILES)}, got {runtime!r}")
    if onnxruntime_ok is None:
        from .runtime import onnxruntime_available

        onnxruntime_ok = onnxruntime_available()
    if onnxruntime_ok:
        for name in (ONNX_INT8, ONNX):
            if name in config.files_sha256 and (folder is None or member_or_none(folder, name) is not None):
                return name
    return WEIGHTS


def served_runtimes(path: str | Path, config: ModelConfig) -> list[str]:
    """Every runtime this local bundle can serve with (its file recorded and present), Keras first."""
    return [rt for rt, name in reversed(RUNTIME_FILES.items())
            if name == WEIGHTS or (name in config.files_sha256 and member_or_none(path, name) is not None)]


def served_model_files(config: ModelConfig, runtime: str = "auto", *, folder: str | Path | None = None,
                       onnxruntime_ok: bool | None = None) -> list[str]:
    """The model files serving reads: ``serving_file``, and with an int8 model its companions
    (``INT8_COMPANIONS``: the self-check reference and the float model of close calls) that the
    bundle records. Their sizes are the model's size on disk as served."""
    served = serving_file(config, runtime, folder=folder, onnxruntime_ok=onnxruntime_ok)
    companions = [n for n in INT8_COMPANIONS if n in config.files_sha256] if served == ONNX_INT8 else []
    return [served, *companions]


def serving_files(config: ModelConfig, runtime: str = "auto", *, onnxruntime_ok: bool | None = None) -> list[str]:
    """Every file serving this bundle with ``runtime`` may read (see ``SERVING_EXTRAS``)."""
    return [CONFIG, *served_model_files(config, runtime, onnxruntime_ok=onnxruntime_ok), *SERVING_EXTRAS[1:]]


def load_keras_model(path: str | Path, config: ModelConfig):
    """Rebuild the network from the config (no download) and load the verified weights."""
    from .models.network import build_network

    weights = verified_file(path, config, WEIGHTS)
    model = build_network(config)
    try:
        model.load_weights(weights)
    except ValueError as exc:
        raise BundleError(
            f"{weights} does not fit the network that {CONFIG} describes "
            f"({config.architecture}, {config.num_classes} labels): {exc}"
        ) from None
    except OSError as exc:  # h5py: not an HDF5 file at all (e.g. a pickle under this name)
        raise BundleError(f"{weights} is not a Keras weights file (HDF5): {exc}") from None
    return model


_metrics_cache: dict[tuple, dict] = {}


def read_metrics(path: str | Path) -> dict:
    """metrics.json: ``{split: {metric: value, ...}}``; {} when absent, ``BundleError`` when it
    is not JSON of that shape (a list, a split that is not an object).

    Parsed once per version of the file (its real path, size and modification time): the
    Compare tab asks on every click. Each caller gets its own copy."""
    file = member(path, METRICS)
    if file is None:
        return {}
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    data = _metrics_cache.get(key)
    if data is None:
        data = read_json(file)
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise BundleError(f"{Path(path) / METRICS} must map each split to an object of metrics, "
                              f"got {json.dumps(data)[:80]}")
        if len(_metrics_cache) > 64:
            _metrics_cache.clear()
        _metrics_cache[key] = data
    return copy.deepcopy(data)


def read_card(path: str | Path) -> str | None:
    """The model card's text (None when absent); bytes that are not UTF-8 are replaced."""
    file = member(path, CARD)
    return None if file is None else file.read_text(encoding="utf-8", errors="replace")


def write_metrics(data: dict) -> Writer:
    return lambda dest: _write_json(dest, data)


def has_float_companion(config: ModelConfig) -> bool:
    """Whether the bundle records a float ONNX model beside its int8 one: the model that settles
    the int8 model's close calls and serves where its self-check fails (a Hub download may still
    have to fetch it)."""
    return ONNX in config.files_sha256


def read_selfcheck(path: str | Path, config: ModelConfig):
    """The int8 model's self-check reference (``selfcheck.Reference``), verified; None when the
    bundle records none (exported before self-checks existed)."""
    from . import selfcheck

    if SELFCHECK not in config.files_sha256:
        return None
    return selfcheck.read(verified_file(path, config, SELFCHECK))
