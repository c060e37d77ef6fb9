"""Issue 26, without a network or a Hub: what a built Space folder serves, the rate limit's
client key behind proxies, the streamed batch join."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from sports_classifier import batch
from sports_classifier.app.client_address import ClientAddress
from sports_classifier.app.predict import status_markdown
from sports_classifier.app.registry import ModelRegistry
from sports_classifier.errors import UserInputError
from sports_classifier.hub import MODELS_ENV, SPACE_CONFIG, served_models, space_built_with

ROOT = Path(__file__).resolve().parents[2]


# -- a built Space folder serves what it was built with --------------------------------------------

def test_a_space_folder_serves_its_space_config_without_the_variable(tmp_path):
    (tmp_path / SPACE_CONFIG).write_text(json.dumps({MODELS_ENV: "hf:alice/tiny,hf:alice/tiny@v1"}))
    (tmp_path / "models" / "local").mkdir(parents=True)  # a Space folder's own models/ comes after
    names = [s.name for s in served_models(root=tmp_path, env={})]
    assert names == ["alice/tiny", "alice/tiny@v1"]
    # the Space variable (or --models) still decides when set
    assert [s.name for s in served_models(root=tmp_path, env={MODELS_ENV: "hf:bob/other"})] == ["bob/other"]
    assert [s.name for s in served_models("hf:carol/x", root=tmp_path, env={MODELS_ENV: "hf:bob/other"})] == ["carol/x"]


def test_a_space_folder_without_its_config_serves_its_readme_models(tmp_path):
    (tmp_path / "README.md").write_text("---\nsdk: gradio\nmodels:\n- alice/tiny\n- bob/lite0\n---\n# A Space\n")
    assert space_built_with(tmp_path) == "hf:alice/tiny,hf:bob/lite0"
    sources = served_models(root=tmp_path, env={})
    assert [(s.location, s.hub, s.revision) for s in sources] == [("alice/tiny", True, None), ("bob/lite0", True, None)]


def test_the_project_checkout_still_serves_its_bundled_models():
    # The project's README is a Space configuration too, with no models list: models/ serves.
    assert space_built_with(ROOT) is None
    assert served_models(root=ROOT, env={}) and all(not s.hub for s in served_models(root=ROOT, env={}))


def test_a_broken_space_config_says_what_to_do(tmp_path):
    (tmp_path / SPACE_CONFIG).write_text("{not json")
    with pytest.raises(UserInputError, match=f"build the Space folder again, or set {MODELS_ENV}"):
        served_models(root=tmp_path, env={})


def test_no_models_says_what_to_set():
    text = status_markdown(ModelRegistry([]))
    assert "No models" in text and f"Set `{MODELS_ENV}`" in text and "hf:user/repo" in text
    assert "Variables and secrets" in text and "--models" in text


# -- the rate limit's key ---------------------------------------------------------------------------

def request(peer: str, forwarded: str | None = None):
    headers = {"x-forwarded-for": forwarded} if forwarded is not None else {}
    return SimpleNamespace(client=SimpleNamespace(host=peer), headers=headers)


def test_x_forwarded_for_is_ignored_without_a_trusted_proxy():
    key = ClientAddress.from_environment((), env={})
    assert key(request("203.0.113.7", "81.2.69.1")) == "203.0.113.7"  # a client cannot pick its key
    assert key(request("10.0.0.5", "81.2.69.1")) == "10.0.0.5"


def test_behind_a_trusted_proxy_the_forwarded_client_is_the_key():
    key = ClientAddress(["10.0.0.0/8"])
    assert key(request("10.0.0.5", "81.2.69.1")) == "81.2.69.1"
    # what the client wrote on the left is skipped: the proxy appends the address it saw
    assert key(request("10.0.0.5", "1.2.3.4, 81.2.69.1")) == "81.2.69.1"
    assert key(request("10.0.0.5", "81.2.69.1, 10.0.0.9")) == "81.2.69.1"  # two trusted hops
    # a peer that is not the trusted proxy is its own key, whatever it sends
    assert key(request("203.0.113.7", "81.2.69.1")) == "203.0.113.7"
    assert key(request("10.0.0.5")) == "10.0.0.5"  # the proxy itself (a health check)
    assert key(request("10.0.0.5", "not-an-address")) == "10.0.0.5"
    with pytest.raises(UserInputError, match="--trusted-proxy"):
        ClientAddress(["proxy.example"])


def test_on_a_space_the_spaces_proxy_is_trusted():
    key = ClientAddress.from_environment((), env={"SYSTEM": "spaces"})
    assert key.on_spaces
    assert key(request("10.16.4.2", "81.2.69.1")) == "81.2.69.1"
    assert key(request("10.16.4.2", "6.6.6.6, 81.2.69.1, 10.20.0.3")) == "81.2.69.1"
    assert key(request("10.16.4.2", "2a00:1450:4001::200e")) == "2a00:1450:4001::200e"
    visitors = {key(request("10.16.4.2", f"81.2.69.{i}")) for i in range(5)}
    assert len(visitors) == 5  # five visitors, five budgets (not one shared by all)


def test_the_app_keys_its_rate_limit_on_the_client_address():
    source = (ROOT / "app.py").read_text()
    # every counted request (ADMISSION) and every upload (UploadGuard) is keyed by CLIENT; the
    # behaviour through a proxy is tested over HTTP in tests/e2e/test_space_venv.py
    assert "ADMISSION.admit(CLIENT(request)" in source and "client=CLIENT" in source
    assert "--trusted-proxy" in source


# -- the batch join streams ------------------------------------------------------------------------

def synthetic_shards(folder: Path, rows: int, shard_size: int, top_k: int = 2) -> batch.Shards:
    paths = [f"img-{i:06d}.jpg" for i in range(rows)]
    shards = batch.Shards(folder / "out.parquet", paths, model="m", top_k=top_k, shard_size=shard_size)
    for index in range(shards.count):
        part = shards.rows(index)
        cols = {"path": part, "ood": [], "error": []}
        for k in range(1, top_k + 1):
            cols[f"label_{k}"] = [None if i % 7 == 0 else f"sport {k}" for i, _ in enumerate(part)]
            cols[f"prob_{k}"] = [None if i % 7 == 0 else 0.5 / k for i, _ in enumerate(part)]
        cols["ood"] = [None if i % 7 == 0 else i % 2 == 0 for i, _ in enumerate(part)]
        cols["error"] = ["broken" if i % 7 == 0 else None for i, _ in enumerate(part)]
        shards.write(index, batch.frame_of(cols, top_k))
    return shards


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_the_streamed_join_writes_what_concat_wrote(tmp_path, fmt):
    import pyarrow.parquet as pq

    shards = synthetic_shards(tmp_path, 2500, 1000)
    output = tmp_path / f"joined.{fmt}"
    rows, errors = shards.combine(output, fmt, 2)
    whole = pd.concat([pd.read_parquet(shards.path(i)) for i in range(shards.count)], ignore_index=True)
    assert rows == 2500 and errors == int(whole["error"].notna().sum())
    if fmt == "parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(output), whole)
        assert pq.ParquetFile(output).num_row_groups == 3  # one per shard: never all rows at once
    else:
        buffer = tmp_path / "old.csv"
        whole.to_csv(buffer, index=False)
        assert output.read_text() == buffer.read_text()


def test_an_empty_job_writes_an_empty_table_with_the_columns(tmp_path):
    shards = batch.Shards(tmp_path / "out.parquet", [], model="m", top_k=1, shard_size=10)
    assert shards.combine(tmp_path / "out.parquet", "parquet", 1) == (0, 0)
    assert list(pd.read_parquet(tmp_path / "out.parquet").columns) == batch.columns(1)


def test_the_join_holds_one_shard_not_the_table(tmp_path):
    """Peak memory of the join in a fresh process (scripts/measure_combine.py), on 200,000 rows:
    streamed, it grew by 12-27 MB here; pd.concat of every shard grew by 104-114 MB."""
    script = ROOT / "scripts" / "measure_combine.py"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(script), "--rows", "200000", "--work", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=env, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["rows"] == 200_000 and report["method"] == "ParquetWriter"
    assert report["peak_above_start_mb"] < 60, report


# -- packaging ----------------------------------------------------------------------------------

def test_the_wheel_check_names_what_is_missing(tmp_path):
    """scripts/check_wheel.py (run by CI on the wheel it builds) against a wheel that lacks a
    recipe and carries a test file."""
    import importlib.util
    import zipfile

    spec = importlib.util.spec_from_file_location("check_wheel", ROOT / "scripts" / "check_wheel.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    package = ROOT / "sports_classifier"
    wheel = tmp_path / "sports_classifier-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path in sorted(package.rglob("*")):
            name = path.relative_to(ROOT).as_posix()
            if path.is_file() and "__pycache__" not in name and not name.endswith("lite0.json"):
                z.writestr(name, b"")
        z.writestr("tests/unit/test_x.py", b"")
    assert check.problems(wheel) == ["missing from the wheel: sports_classifier/training/recipes/lite0.json",
                                     "should not be in the wheel: tests/unit/test_x.py"]


def test_package_data_covers_what_the_package_reads():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = data["sports_classifier"]
    for pattern in ("models/weights/*.h5", "models/weights/*.md", "training/recipes/*.json", "app/*.md"):
        assert pattern in globs


def test_no_install_line_points_at_pypi():
    """The package is not on PyPI: `pip install "sports_classifier[...]"` fails; the docs and the
    error messages (``errors.install_extra``) give a checkout's `pip install -e ".[extra]"` or the
    built wheel."""
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "sports_classifier" / "app" / "about.md",
             *(ROOT / "sports_classifier").rglob("*.py")]
    for path in texts:
        text = path.read_text()
        assert 'pip install "sports_classifier[' not in text and "pip install 'sports_classifier[" not in text, path
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[ray]"' in readme and "pip install \"dist/sports_classifier-" in readme
    assert "gpiosenka/sports-classification" in readme and "159.lnk" in readme and "`runs/...`" in readme
