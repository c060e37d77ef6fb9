"""Issue 23 through the command line: each attack is a real ``python -m sports_classifier``
subprocess on files built in the test's tmp folder (items 2, 7, 12 and the "Low" list).

A child's peak memory is its own ``VmHWM``, printed by a wrapper around ``cli.main`` (the
parent's ``ru_maxrss`` would mix in every earlier child).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.bundles import copy_bundle
from helpers.onnx_bundle import make_onnx_bundle

PEAK_WRAPPER = (
    "import sys\n"
    "from sports_classifier.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "print(f'peak-kb {peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def cli(*args, cwd=None, env_extra=None, timeout=120, peak=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPORTS_CLASSIFIER_MODEL")}
    env.update(env_extra or {})
    head = [sys.executable, "-c", PEAK_WRAPPER] if peak else [sys.executable, "-m", "sports_classifier"]
    result = subprocess.run([*head, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def peak_mb(err: str) -> float:
    return int(next(line for line in err.splitlines() if line.startswith("peak-kb")).split()[1]) / 1024


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_onnx_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


def photo(path: Path, value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(path)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def flat_png(path: Path, width: int, height: int, *, color_type: int, bit_depth: int = 8) -> Path:
    """A PNG of zeros of any size, compressed row by row: megapixels in a few KB, never held
    whole in this process (color type 6: RGBA, 0: grey)."""
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    row = b"\0" * (1 + width * channels * bit_depth // 8)
    packer = zlib.compressobj(9)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth,
                                                                     color_type, 0, 0, 0)))
        data = bytearray()
        for _ in range(height):
            for start in range(0, len(row), 1 << 24):
                data += packer.compress(row[start:start + (1 << 24)])
        data += packer.flush()
        fh.write(_chunk(b"IDAT", bytes(data)) + _chunk(b"IEND", b""))
    return path


# -- item 2: a 1-pixel-high image -----------------------------------------------------------------

@pytest.mark.parametrize("width, color_type, bit_depth", [(63_999_000, 6, 8), (40_000_000, 0, 16)],
                         ids=["rgba-63999000x1", "grey16-40000000x1"])
def test_a_one_pixel_high_image_is_refused_in_bounded_memory(model, tmp_path, width, color_type, bit_depth):
    bomb = flat_png(tmp_path / "strip.png", width, 1, color_type=color_type, bit_depth=bit_depth)
    assert bomb.stat().st_size < 400_000  # a few hundred KB
    code, out, err = cli("predict", "--model", model, bomb, peak=True)
    assert code == 1 and "wider or taller than 32,768 pixels" in error_lines(err)[0]
    assert peak_mb(err) < 700, err


def test_the_largest_accepted_image_peaks_under_700_mb(model, tmp_path):
    """The other side of the bound: a 64 Mpx RGBA PNG of the widest shape accepted (32,768 x
    1,953) is predicted, under 700 MB."""
    big = flat_png(tmp_path / "wide.png", 32_768, 1_953, color_type=6)
    code, out, err = cli("predict", "--model", model, "--json", big, peak=True, timeout=300)
    assert code == 0, err
    assert json.loads(out)[0]["predictions"], out
    assert peak_mb(err) < 700, err


# -- item 7: JSON bombs -----------------------------------------------------------------------------

def test_a_28_mb_config_is_refused_before_it_is_parsed(model, tmp_path):
    from sports_classifier import bundle

    bomb = copy_bundle(model, tmp_path / "bomb")
    config = json.loads((bomb / bundle.CONFIG).read_text())
    config["training"] = {"padding": [[0.5] * 50] * 112_000}  # valid JSON, valid config: 28 MB
    (bomb / bundle.CONFIG).write_text(json.dumps(config))
    assert (bomb / bundle.CONFIG).stat().st_size > 25e6
    start = time.perf_counter()
    code, out, err = cli("predict", "--model", bomb, photo(tmp_path / "p.png"), peak=True)
    assert code == 1 and "refusing to read it" in error_lines(err)[0]
    assert time.perf_counter() - start < 15 and peak_mb(err) < 300, err


# -- item 12 and the batch items of "Low" ---------------------------------------------------------

def test_a_file_name_that_is_not_utf8_gets_its_row(model, tmp_path):
    folder = tmp_path / "in"
    photo(folder / "fine.png")
    odd = os.path.join(os.fsencode(folder), b"caf\xe9-\xff.png")  # Latin-1 bytes: not UTF-8
    photo(Path(os.fsdecode(odd)))
    code, out, err = cli("predict", "--model", model, "--input", folder, "--output", tmp_path / "out.parquet")
    assert code == 0, err
    table = pd.read_parquet(tmp_path / "out.parquet")
    assert len(table) == 2 and table["error"].isna().all()
    assert any(p.endswith("caf\\xe9-\\xff.png") for p in table["path"]), list(table["path"])


def test_a_glob_over_two_link_loops_finishes(model, tmp_path):
    folder = tmp_path / "in"
    photo(folder / "a" / "one.png")
    for name in ("loop", "loop2"):
        (folder / "a" / name).symlink_to(".")  # inside the test's own folder
    code, out, err = cli("predict", "--model", model, "--input", f"{folder}/**/*.png", "--output",
                         tmp_path / "out.csv", timeout=90)
    assert code == 0, err
    assert list(pd.read_csv(tmp_path / "out.csv")["path"]) == [str(folder / "a" / "one.png")]


def test_a_parquet_manifest_that_expands_to_gigabytes_is_refused(model, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    long_path = "x" * 4000 + ".png"
    paths = pa.DictionaryArray.from_arrays(pa.array(np.zeros(1_000_000, np.int32)), pa.array([long_path]))
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"path": paths}), manifest, use_dictionary=True)
    assert manifest.stat().st_size < 600_000  # 4 GB of paths once expanded
    code, out, err = cli("predict", "--model", model, "--input", manifest, "--output", tmp_path / "out.parquet",
                         peak=True)
    assert code == 1 and "at most 256 MB are read at once" in error_lines(err)[0]
    assert peak_mb(err) < 400, err


def test_shards_of_a_bundle_changed_in_place_are_not_reused(tmp_path):
    from sports_classifier.batch import predict_dataset

    folder = tmp_path / "in"
    for i in range(3):
        photo(folder / f"{i}.png", value=40 * i)
    model = make_onnx_bundle(tmp_path / "model", seed=1)
    first = predict_dataset(model, folder, tmp_path / "out.parquet", shard_size=1, progress=False)
    before = pd.read_parquet(first.output)
    make_onnx_bundle(tmp_path / "model", seed=2)  # retrained in place: other weights, same path
    again = predict_dataset(model, folder, tmp_path / "out.parquet", shard_size=1, progress=False)
    assert again.shards_skipped == 0
    assert not np.allclose(before["prob_1"].to_numpy(float), pd.read_parquet(again.output)["prob_1"].to_numpy(float))
    assert predict_dataset(model, folder, tmp_path / "out.parquet", shard_size=1, progress=False).shards_skipped == 3


def test_an_output_onto_a_folder_or_a_foreign_file_is_refused(model, tmp_path):
    folder = tmp_path / "in"
    photo(folder / "one.png")
    target = tmp_path / "results"
    target.mkdir()
    code, out, err = cli("predict", "--model", model, "--input", folder, "--output", target)
    assert code == 1 and "is a folder" in error_lines(err)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "results"] and not any(target.iterdir())
    notes = tmp_path / "notes.csv"
    notes.write_text("my own notes\n")
    code, out, err = cli("predict", "--model", model, "--input", folder, "--output", notes)
    assert code == 1 and "already exists" in error_lines(err)[0] and notes.read_text() == "my own notes\n"
    code, out, err = cli("predict", "--model", model, "--input", folder, "--output", notes, "--overwrite")
    assert code == 0 and "one.png" in notes.read_text()
    code, out, err = cli("predict", "--model", model, "--input", folder, "--output", notes)  # ours now
    assert code == 0, err
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


# -- terminal escapes and user errors that printed tracebacks ----------------------------------------

def test_evaluate_prints_escape_sequences_in_labels_and_file_names_escaped(tmp_path):
    labels = ("plain", "red\x1b[31mtext", "bell\x07")
    model = make_onnx_bundle(tmp_path / "model", labels=labels)
    data = tmp_path / "data"
    for split in ("train", "valid"):
        for i, label in enumerate(labels):
            photo(data / split / label / "1.png", value=60 * i)
    (data / "valid" / labels[1] / "broken\x1b]0;owned\x07.png").write_bytes(b"not an image")
    code, out, err = cli("evaluate", "--model", model, "--data", data)
    assert code == 0, err
    assert "lowest F1:" in out and "\\x1b" in out
    assert "skipped 1 unreadable" in err and "\\x1b]0;owned\\x07" in err
    assert "\x1b" not in out + err and "\x07" not in out + err


def test_bench_with_zero_images_is_one_error_line(model, tmp_path):
    photo(tmp_path / "data" / "a.png")
    code, out, err = cli("bench", "--model", model, "--data", tmp_path / "data", "--images", "0")
    assert code == 1 and "--images" in error_lines(err)[0]


def test_train_without_keras_says_which_extra_to_install(tmp_path):
    """The README's app install has no TensorFlow or Keras; an import of either then fails as
    it would there (a module that raises ModuleNotFoundError stands in for the absent one)."""
    shim = tmp_path / "no-train-extra"
    shim.mkdir()
    for name in ("tensorflow", "keras"):
        (shim / f"{name}.py").write_text(f"raise ModuleNotFoundError(\"No module named '{name}'\", name='{name}')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}
    photo(tmp_path / "data" / "train" / "a" / "1.png")
    code, out, err = cli("train", "--data", tmp_path / "data", "--out", tmp_path / "out", env_extra=env)
    assert code == 1 and 'pip install -e ".[train]"' in error_lines(err)[0]
