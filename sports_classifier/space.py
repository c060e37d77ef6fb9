"""Deploying the app as a Hugging Face Space: prepare its folder, push it.

This module deploys; it serves nothing (the app does: ``app.py`` reads what the folder was
built with through ``hub.served_models``). It talks to the Hub only through ``hub``'s public
functions.

The Space runs the project's ``app.py`` (Gradio SDK) with ONNX Runtime, without TensorFlow.
The folder records the models it serves in ``space_config.json`` (``SPORTS_CLASSIFIER_MODELS``
syntax: comma-separated ``hf:user/repo@rev`` entries) and in its README's ``models:`` list; the
app serves those unless the ``SPORTS_CLASSIFIER_MODELS`` variable says otherwise (``push_space``
sets it as a Space *variable*, which the owner can change under Settings without a commit).
``preload_from_hub`` makes the Space download the models into its Hub cache at build time, so
the app starts without waiting for them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, UserInputError
from .hub import (MODELS_ENV, SPACE_CONFIG, parse_model_source, require_huggingface_hub,
                  served_files, upload_space)

PACKAGE = "sports_classifier"
GRADIO_HINT = ("`sports-classifier space` writes the Gradio version into the Space's README "
               "(sdk_version) and requirements.txt, and Gradio is not installed here: "
               "pip install gradio (from a checkout: pip install -e '.[app]'), or pass --sdk-version X.Y.Z (sdk_version=...)")
# Not shipped with the vendored package: converted ImageNet weights (tens of MB) serve training only.
_VENDOR_SKIP = ("weights", "__pycache__", "*.pyc")


@dataclass(frozen=True)
class HubModel:
    """A model repo the Space serves, optionally pinned to a branch, tag or commit."""

    repo_id: str
    revision: str | None = None
    files: tuple[str, ...] = ()  # what serving it downloads (``hub.served_files``); empty: not looked up

    @property
    def spec(self) -> str:
        """The entry of ``SPORTS_CLASSIFIER_MODELS`` for this model."""
        return f"hf:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    @property
    def pinned_to_commit(self) -> bool:
        from huggingface_hub.file_download import REGEX_COMMIT_HASH

        return self.revision is not None and REGEX_COMMIT_HASH.fullmatch(self.revision) is not None

    @property
    def preloadable(self) -> bool:
        """The Hub pins preloads by commit hash only: a model on its default branch or pinned to
        a commit is preloaded; one pinned to a branch or tag is downloaded when the app starts."""
        return self.revision is None or self.pinned_to_commit

    @property
    def preload(self) -> str | None:
        """The ``preload_from_hub`` entry: exactly the files serving downloads (``files``), on
        the default branch or at the pinned commit; None when not preloadable."""
        if not self.preloadable or not self.files:
            return None
        return " ".join([self.repo_id, ",".join(self.files), *([self.revision] if self.revision else [])])


def space_readme(models: Sequence[HubModel], *, title: str, sdk_version: str, emoji: str = "🏅",
                 license: str = "apache-2.0", python_version: str = "3.11") -> str:
    """The Space's README.md: front matter (Spaces config) and a short description. Pure."""
    from huggingface_hub import SpaceCardData

    value = ",".join(m.spec for m in models)
    data = SpaceCardData(
        title=title, sdk="gradio", sdk_version=sdk_version, python_version=python_version,
        app_file="app.py", license=license, models=list(dict.fromkeys(m.repo_id for m in models)),
        tags=["image-classification", "sports", "onnx", PACKAGE],
        emoji=emoji, colorFrom="green", colorTo="blue", pinned=False,
        short_description="Recognise the sport in a photo (100 classes)",
        preload_from_hub=[p for p in dict.fromkeys(m.preload for m in models) if p] or None,
    )
    listed = "\n".join(f"- [{m.repo_id}](https://huggingface.co/{m.repo_id})"
                       + (f" at `{m.revision}`" if m.revision else "") for m in models)
    return f"""---
{data.to_yaml().strip()}
---

# {title}

Recognises the sport in a photo among the 100 classes of the 100 Sports Image Classification
dataset, with models trained by the `{PACKAGE}` package and served through ONNX Runtime.

Models served:

{listed}

The app serves the models this Space was built with, recorded in `{SPACE_CONFIG}`:

```
{MODELS_ENV}={value}
```

To serve others without a new commit, set the `{MODELS_ENV}` variable (Settings -> Variables and
secrets; comma-separated `hf:user/repo` or `hf:user/repo@revision` entries): it takes precedence,
and the Space restarts with them.
"""


def space_requirements(package: str | None, *, gradio_version: str) -> str:
    """requirements.txt of the Space: no TensorFlow (serving is ONNX Runtime)."""
    if package:
        lines = [package, "onnxruntime"]
    else:  # the package is vendored into the Space: install its runtime dependencies
        lines = [r for r in (metadata.requires(PACKAGE) or []) if "extra ==" not in r]
    lines.append(f"gradio=={gradio_version}")  # the version sdk_version runs, for local runs too
    return "# The Space's dependencies (serving only: ONNX Runtime, no TensorFlow).\n" + "\n".join(lines) + "\n"


def prepare_space(out_dir: str | Path, *, model_repos: Sequence[str], title: str = "Sports Classifier",
                  app_file: str | Path = Path("app.py"), package: str | None = None,
                  include: Sequence[str | Path] = (), sdk_version: str | None = None,
                  token: str | bool | None = None) -> Path:
    """Write a Gradio Space folder serving ``model_repos`` (``user/repo`` or ``user/repo@rev``).

    The folder holds ``app.py`` (a copy of ``app_file``), ``requirements.txt``, the Space
    ``README.md``, ``space_config.json`` and, unless ``package`` gives a requirement line
    for ``sports_classifier`` (e.g. ``"sports_classifier @ git+https://github.com/u/r@v0.1"``),
    a copy of the package's source so the Space needs no published package. ``include``
    names more files or folders to copy (e.g. ``examples``). Written atomically.

    ``preload_from_hub`` lists, for each model on its default branch or pinned to a commit,
    exactly the files serving it downloads; they are looked up on the Hub now (``token`` for
    private repos). ``sdk_version``: the Gradio version the Space runs (default: the installed one).

    >>> prepare_space("space", model_repos=["user/sports-lite0@v1"])
    PosixPath('space')
    """
    try:
        models = [HubModel(m.location, m.revision) for m in (parse_model_source(r, hub_only=True) for r in model_repos)]
    except UserInputError as exc:
        raise ConfigError(str(exc)) from None
    if not models:
        raise ConfigError("a Space needs at least one model repo (user/repo[@revision])")
    if sdk_version is None:
        try:
            sdk_version = metadata.version("gradio")
        except metadata.PackageNotFoundError:
            raise UserInputError(GRADIO_HINT) from None
    app_file = Path(app_file)
    if not app_file.is_file():
        raise FileNotFoundError(f"app file not found: {app_file} (the Gradio app the Space runs)")
    extras = [Path(p) for p in include]
    for extra in extras:
        if not extra.exists():
            raise FileNotFoundError(f"cannot include {extra} in the Space: not found")
    models = [HubModel(m.repo_id, m.revision, served_files(m.repo_id, m.revision, token=token))
              if m.preloadable else m for m in models]
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.copyfile(app_file, tmp / "app.py")
        if not package:
            shutil.copytree(Path(__file__).resolve().parent, tmp / PACKAGE,  # the whole package
                            ignore=shutil.ignore_patterns(*_VENDOR_SKIP))
        for extra in extras:
            if extra.is_dir():
                shutil.copytree(extra, tmp / extra.name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copyfile(extra, tmp / extra.name)
        (tmp / "requirements.txt").write_text(space_requirements(package, gradio_version=sdk_version))
        (tmp / "README.md").write_text(space_readme(models, title=title, sdk_version=sdk_version),
                                       encoding="utf-8")
        config = {MODELS_ENV: ",".join(m.spec for m in models),
                  "models": [{"repo_id": m.repo_id, "revision": m.revision} for m in models]}
        (tmp / SPACE_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_folder(new: Path, dest: Path) -> None:
    if dest.exists():
        if not dest.is_dir() or (any(dest.iterdir()) and not (dest / SPACE_CONFIG).is_file()):
            raise FileExistsError(f"{dest} exists and is not a Space folder made by prepare_space; "
                                  "refusing to overwrite it (choose another folder)")
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)


def push_space(folder: str | Path, space_id: str, *, token: str | bool | None = None,
               private: bool | None = None) -> str:
    """Upload a folder made by ``prepare_space`` to the Gradio Space ``space_id`` (created if
    needed) in one commit, set its ``SPORTS_CLASSIFIER_MODELS`` variable, return its URL.

    >>> push_space("space", "user/sports-classifier")
    'https://huggingface.co/spaces/user/sports-classifier'
    """
    require_huggingface_hub()
    from huggingface_hub import SpaceCard

    space_id = parse_model_source(space_id, hub_only=True, revision_allowed=False, kind="Space").location
    folder = Path(folder)
    try:
        card = SpaceCard.load(folder / "README.md")
        config = json.loads((folder / SPACE_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder} is not a Space folder made by prepare_space ({exc})") from None
    if card.data.sdk != "gradio" or not (folder / (card.data.app_file or "app.py")).is_file():
        raise ConfigError(f"{folder}/README.md must declare sdk: gradio and an app_file that exists")
    variables = {MODELS_ENV: config[MODELS_ENV]} if config.get(MODELS_ENV) else {}
    url = upload_space(folder, space_id, variables=variables, token=token, private=private,
                       commit_message="Deploy the sports_classifier Space")
    return str(url)
