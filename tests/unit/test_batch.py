"""Batch prediction with the local engine: inputs, the table, errors as rows, resumable shards."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sports_classifier import batch
from sports_classifier.batch import collect_inputs, predict_dataset
from sports_classifier.classifier import Classifier
from sports_classifier.cli import main
from sports_classifier.errors import UserInputError

ROOT = Path(__file__).resolve().parents[2]
LITE0 = ROOT / "models" / "lite0"


@pytest.fixture
def images(synthetic_dataset, tmp_path) -> Path:
    """12 readable JPEGs in nested folders, one corrupt file, one empty file, one non-image."""
    folder = tmp_path / "in"
    shutil.copytree(synthetic_dataset / "valid", folder / "valid")
    shutil.copytree(synthetic_dataset / "train" / "cats", folder / "more" / "cats")
    (folder / "more" / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_inputs_from_a_folder_a_glob_and_manifests(images, tmp_path):
    found = collect_inputs(images)
    assert len(found) == 9 + 6 + 2 and found == sorted(found)
    assert not any(p.endswith(".txt") for p in found)
    assert collect_inputs(str(images / "valid" / "*" / "1.jpg")) == sorted(str(p) for p in images.glob("valid/*/1.jpg"))
    # A manifest keeps its order; relative paths are read from the manifest's folder; a missing file stays.
    rel = ["valid/dogs/2.jpg", "valid/cats/1.jpg", "missing.jpg"]
    pd.DataFrame({"path": rel, "other": 1}).to_csv(images / "list.csv", index=False)
    assert collect_inputs(images / "list.csv") == [str(images / r) for r in rel]
    pd.DataFrame({"filepath": [str(images / r) for r in rel]}).to_parquet(tmp_path / "list.parquet")
    assert collect_inputs(tmp_path / "list.parquet") == [str(images / r) for r in rel]
    pd.DataFrame({"name": rel}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserInputError, match="no path column"):
        collect_inputs(tmp_path / "bad.csv")
    with pytest.raises(UserInputError, match="no files match"):
        collect_inputs(str(tmp_path / "*.nothing"))


def test_table_matches_predict_files_and_errors_are_rows(images, tmp_path):
    out = tmp_path / "out.parquet"
    result = predict_dataset(LITE0, images, out, top_k=2, shard_size=4, progress=False)
    table = pd.read_parquet(out)
    paths = collect_inputs(images)
    assert list(table.columns) == ["path", "label_1", "prob_1", "label_2", "prob_2", "ood", "error"]
    assert table["path"].tolist() == paths and result.rows == len(paths) and result.shards == 5
    assert result.errors == 2 and set(table.loc[table["error"].notna(), "path"]) == {
        str(images / "more" / "broken.jpg"), str(images / "empty.png")}
    bad = table[table["error"].notna()]
    assert bad["label_1"].isna().all() and bad["prob_1"].isna().all()
    expected = Classifier.from_pretrained(LITE0).predict_files(paths, top_k=2)
    for (_, row), p in zip(table.iterrows(), expected):
        if not p.ok:
            assert row["error"] == p.error
        else:
            assert pd.isna(row["error"]) and bool(row["ood"]) == p.ood
            assert [row["label_1"], row["label_2"]] == [label for label, _ in p.top]
            np.testing.assert_allclose([row["prob_1"], row["prob_2"]], [q for _, q in p.top], atol=1e-6)


def test_a_rerun_skips_finished_shards_and_redoes_only_missing_ones(images, tmp_path, monkeypatch):
    out = tmp_path / "out.parquet"
    calls = []
    real = batch.predict_chunk

    def crash_after_two_shards(clf, paths, top_k, batch_size):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the job were stopped here
        calls.append(list(paths))
        return real(clf, paths, top_k, batch_size)

    monkeypatch.setattr(batch, "predict_chunk", crash_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        predict_dataset(LITE0, images, out, shard_size=5, progress=False)
    parts = sorted((tmp_path / "out.parquet.parts").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-000000.parquet", "part-000001.parquet"] and not out.exists()
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    seen = []
    monkeypatch.setattr(batch, "predict_chunk", lambda clf, paths, *a: seen.append(paths) or real(clf, paths, *a))
    result = predict_dataset(LITE0, images, out, shard_size=5, progress=False)
    assert result.shards == 4 and result.shards_skipped == 2
    assert sum(len(p) for p in seen) == len(collect_inputs(images)) - 10  # only the two missing shards
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished shards untouched
    # The same table as one uninterrupted run.
    fresh = predict_dataset(LITE0, images, tmp_path / "fresh.parquet", shard_size=5, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(fresh.output))
    # Another job (other top-k) in the same place starts afresh rather than mixing shards.
    again = predict_dataset(LITE0, images, out, top_k=3, shard_size=5, progress=False)
    assert again.shards_skipped == 0 and "label_3" in pd.read_parquet(out).columns


def test_cli_batch_writes_csv_and_the_single_image_mode_still_works(images, tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert main(["predict", "--model", str(LITE0), "--input", str(images / "valid"), "--output", str(out),
                 "--top-k", "3", "--json"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 9 and table["label_1"].notna().all() and table["error"].isna().all()
    assert '"rows": 9' in capsys.readouterr().out
    assert main(["predict", "--model", str(LITE0), str(images / "valid" / "cats" / "1.jpg")]) == 0
    # Unreadable files: the whole table is written, and the exit status says some rows are errors.
    with_errors = tmp_path / "all.parquet"
    assert main(["predict", "--model", str(LITE0), "--input", str(images), "--output", str(with_errors), "--json"]) == 1
    table = pd.read_parquet(with_errors)
    assert len(table) == 17 and table["error"].notna().sum() == 2  # 15 JPEGs, broken.jpg, empty.png
    assert main(["predict", "--model", str(LITE0), "--input", str(images)]) == 1  # no --output
    assert "--output" in capsys.readouterr().err
    assert main(["predict", "--model", str(LITE0), "--input", str(images), "--output", str(tmp_path / "x.parquet"),
                 "--engine", "local", "--shard-size", "0"]) == 1
