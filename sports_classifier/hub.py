"""The Hugging Face Hub: where models come from, downloads into the standard cache, uploads.

Model sources (one parser for the CLI, the app, a Space and ``Classifier.from_pretrained``):
a bundle folder, ``hf:user/repo[@revision]``, or a bare ``user/repo[@revision]`` that is not a
local folder; ``models/DEFAULT`` names the bundled default model.

Downloads go through ``huggingface_hub.snapshot_download``, so everything its users expect
holds: the shared cache (``HF_HOME`` / ``HF_HUB_CACHE``), ``HF_ENDPOINT`` mirrors,
``HF_HUB_OFFLINE=1``, pinned revisions (branch, tag or commit), tokens from ``HF_TOKEN`` or
``hf auth login``. Failures become a ``HubError`` (or ``BundleError`` for a repo that is not a
usable bundle) whose message says what to do; a token never appears in a message.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from . import bundle
from .version import __version__
from .config import BUNDLE_FORMAT
from .errors import (BundleError, HubAuthError, HubCardConflictError, HubError, HubNotFoundError,
                     HubUnavailableError, UserInputError)

LOGIN_HINT = "pass --token (CLI) or token=... (Python), set HF_TOKEN, or run `hf auth login`"
_TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{8,}")
HF_HUB_REQUIREMENT = "huggingface-hub>=2.0,<3"  # pyproject.toml says the same


def require_huggingface_hub():
    """The ``huggingface_hub`` module, after checking it is a version this package was written
    for (2.x: its ``errors`` module, ``httpx2`` transport and ``hf auth`` CLI). An older one
    would otherwise fail deep inside with a ``ModuleNotFoundError``."""
    try:
        import huggingface_hub
    except ImportError as exc:
        raise HubError(f"huggingface_hub is not installed ({exc}): pip install '{HF_HUB_REQUIREMENT}'") from None
    version = str(getattr(huggingface_hub, "__version__", "0"))
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) != 2:
        raise HubError(f"sports_classifier needs {HF_HUB_REQUIREMENT}, but huggingface_hub {version} is "
                       f"installed: pip install '{HF_HUB_REQUIREMENT}'")
    return huggingface_hub


def _where(repo_id: str, revision: str | None) -> str:
    return f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")


def _scrub(text: str, token: str | bool | None) -> str:
    """Remove a token (the one given, HF_TOKEN's, or anything shaped like one) from text."""
    import os

    for secret in (token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN"),
                   *_saved_tokens()):
        if isinstance(secret, str) and secret:
            text = text.replace(secret, "***")
    return _TOKEN_LIKE.sub("hf_***", text)


def _saved_tokens() -> list[str]:
    """The token ``hf auth login`` stored (``$HF_HOME/token`` and the stored-tokens file): it is
    sent like HF_TOKEN's, so it must be scrubbed like it, even when it has no ``hf_`` prefix."""
    try:
        from huggingface_hub import get_token
        from huggingface_hub.utils import get_stored_tokens

        saved = [get_token()] + list(get_stored_tokens().values())
    except Exception:  # an old huggingface_hub, an unreadable file: nothing more to scrub
        return []
    return [t for t in saved if isinstance(t, str) and t]


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()


def _status(exc) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx2

    from huggingface_hub.errors import OfflineModeIsEnabled

    return (httpx2.TransportError, OfflineModeIsEnabled)


# -- model sources -------------------------------------------------------------------------------

MODELS_ENV = "SPORTS_CLASSIFIER_MODELS"  # the app's models: comma-separated sources
DEFAULT_MODEL_ENV = "SPORTS_CLASSIFIER_MODEL"  # the CLI's default --model
HUB_PREFIX = "hf:"
DEFAULT_MARKER = "DEFAULT"  # models/DEFAULT: the name of the bundled default model's folder
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # a source checkout: models/ beside the package


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a local bundle folder, or a Hub repo at an optional revision."""

    location: str  # folder path, or Hub repo id
    hub: bool = False
    revision: str | None = None
    name: str = ""  # shown to people (the app's model names); unique within a list
    # A bare ``user/repo`` taken for the Hub because no such folder exists: when the Hub cannot
    # serve it either, the message says the folder does not exist (it may have been meant).
    implicit: bool = False

    @property
    def text(self) -> str:
        """The source as a user writes it (``hf:user/repo@rev`` or the folder)."""
        if self.hub:
            return HUB_PREFIX + self.location + (f"@{self.revision}" if self.revision else "")
        return self.location


def is_repo_id(text: str) -> bool:
    """True when ``text`` is a valid Hub repo id of the ``user/name`` form (huggingface_hub's rules)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def check_revision(revision: str | None) -> str | None:
    """``revision`` if it can name a branch, tag or commit; ``UserInputError`` otherwise.

    huggingface_hub stores what a branch or tag points to in ``refs/<revision>`` inside its
    cache, so ``..`` in a revision (``hf:alice/x@../../../../pwn``) made it write outside the
    cache. Git's own rules for ref names forbid all of these."""
    if revision is None:
        return None
    bad = (not revision or revision.startswith("/") or revision.endswith(("/", ".lock"))
           or any(part in ("", ".", "..") or part.startswith(".") for part in revision.split("/"))
           or any(c in revision for c in "\\ ~^:?*[") or ".." in revision or "@{" in revision
           or not revision.isprintable() or len(revision) > 255)
    if bad:
        raise UserInputError(f"bad revision {revision!r}: expected a branch, tag or commit hash (no '..', "
                             "no part starting with '.', no spaces or '\\ ~^:?*[')")
    return revision


def parse_model_source(text: str, *, root: str | Path | None = None, hub_only: bool = False,
                       revision_allowed: bool = True, kind: str = "model repo") -> ModelSource:
    """Parse one model source: the one parser of every model or repo id the package is given.

    ``hf:user/repo@rev`` is always the Hub; a bare ``user/repo[@rev]`` is the Hub unless such a
    local folder exists; anything else is a folder (relative ones resolve against ``root``,
    default the working folder). ``hub_only``: the text names a Hub repo (``hf:`` optional),
    e.g. a Space's models or a repo to push to; ``revision_allowed=False``: without ``@rev``
    (a push names its branch apart). Raises ``UserInputError`` on a malformed Hub id or
    revision, before any network call.

    >>> parse_model_source("hf:me/sports@v1")
    ModelSource(location='me/sports', hub=True, revision='v1', name='me/sports@v1', implicit=False)
    """
    raw = str(text).strip()
    if not raw:
        raise UserInputError("empty model source: give a bundle folder or hf:user/repo[@revision]")
    explicit = hub_only or raw.startswith(HUB_PREFIX)
    body = raw.removeprefix(HUB_PREFIX)
    repo, at, revision = body.partition("@")
    if hub_only:
        if not is_repo_id(repo) or (at and (not revision or not revision_allowed)):
            expected = "user/name" + (" or user/name@revision" if revision_allowed else "")
            extra = "" if revision_allowed else "; no @revision: pass the branch with --revision"
            raise UserInputError(f"bad {kind} id {raw!r}: expected {expected} (letters, digits, '-', '_', '.'; "
                                 f"at most 96 characters{extra})")
        return ModelSource(repo, hub=True, revision=check_revision(revision or None),
                           name=repo + (f"@{revision}" if at else ""))
    path = Path(raw).expanduser()
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    looks_hub = not raw.startswith((".", "/", "~")) and is_repo_id(repo) and (not at or revision)
    if explicit or (looks_hub and not path.exists()):
        if not is_repo_id(repo) or (at and not revision):
            raise UserInputError(f"bad Hub model {raw!r}: expected hf:user/repo or hf:user/repo@revision "
                                 "(letters, digits, '-', '_', '.'; at most 96 characters)")
        return ModelSource(repo, hub=True, revision=check_revision(revision or None),
                           name=repo + (f"@{revision}" if at else ""), implicit=not explicit)
    return ModelSource(str(path), name=path.name or raw)


def parse_model_sources(text: str, *, root: str | Path | None = None) -> list[ModelSource]:
    """Comma-separated sources (``models/a,hf:user/repo@rev``), with unique display names."""
    sources = [parse_model_source(part, root=root) for part in text.split(",") if part.strip()]
    seen: dict[str, int] = {}
    out = []
    for source in sources:
        n = seen.get(source.name, 0)
        seen[source.name] = n + 1
        out.append(source if n == 0 else dataclasses.replace(source, name=f"{source.name} ({n + 1})"))
    return out


def bundled_models(models_dir: str | Path) -> list[ModelSource]:
    """Every bundle folder in ``models_dir``, the one named by ``models_dir/DEFAULT`` first."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    folders = sorted(p for p in models_dir.iterdir() if p.is_dir() and (p / bundle.CONFIG).is_file())
    marker = models_dir / DEFAULT_MARKER
    if marker.is_file():
        first = marker.read_text().strip()
        folders.sort(key=lambda p: p.name != first)  # stable: keeps the name order otherwise
    return [ModelSource(str(p), name=p.name) for p in folders]


def default_model(env: Mapping[str, str] | None = None) -> str | None:
    """The CLI's default model: $SPORTS_CLASSIFIER_MODEL, else the folder models/DEFAULT names,
    looked for in the working folder, then beside the package source; None when there is none."""
    env = os.environ if env is None else env
    if env.get(DEFAULT_MODEL_ENV):
        return env[DEFAULT_MODEL_ENV]
    for root in (Path.cwd(), _PACKAGE_ROOT):
        found = bundled_models(root / "models")
        if found:
            return found[0].location
    return None


def served_models(cli_value: str | None = None, *, root: str | Path = ".",
                  env: Mapping[str, str] | None = None) -> list[ModelSource]:
    """The models an app serves: ``--models`` if given, else $SPORTS_CLASSIFIER_MODELS, else
    the models a Space folder at ``root`` was built with (``space_built_with``), else every
    bundle in ``root/models`` (models/DEFAULT first)."""
    env = os.environ if env is None else env
    text = cli_value if cli_value else env.get(MODELS_ENV, "")
    if not text.strip():
        text = space_built_with(root) or ""
    if text.strip():
        return parse_model_sources(text, root=root)
    return bundled_models(Path(root) / "models")


SPACE_CONFIG = "space_config.json"  # what `sports-classifier space` built a Space folder to serve


def space_built_with(root: str | Path) -> str | None:
    """The models (``SPORTS_CLASSIFIER_MODELS`` syntax) the Space folder ``root`` was built to
    serve: its ``space_config.json``, else the ``models:`` list of its README's front matter
    (repo ids, default branch); None when ``root`` is no such folder. A Space then serves what
    it was built with even before (or without) its ``SPORTS_CLASSIFIER_MODELS`` variable."""
    import json

    root = Path(root)
    config = root / SPACE_CONFIG
    if config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get(MODELS_ENV)
        except (OSError, ValueError, AttributeError) as exc:
            raise UserInputError(f"{config} is not the JSON object `sports-classifier space` writes ({exc}); "
                                 f"build the Space folder again, or set {MODELS_ENV}") from None
        if isinstance(value, str) and value.strip():
            return value
    readme = root / bundle.CARD
    if readme.is_file():
        from huggingface_hub.repocard import metadata_load

        try:
            models = (metadata_load(readme) or {}).get("models")
        except Exception:  # not YAML front matter: a README like any other, no Space models in it
            return None
        if isinstance(models, list) and models and all(isinstance(m, str) for m in models):
            return ",".join(HUB_PREFIX + m for m in models)
    return None


# -- download ----------------------------------------------------------------------------------


def download_bundle(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
                    token: str | bool | None = None, local_files_only: bool = False,
                    runtime: str | None = None) -> Path:
    """Download (or find in the cache) the bundle at ``repo_id`` and return its local folder.

    ``runtime=None`` fetches the whole bundle; a runtime (``auto``, ``onnx-int8``, ``onnx``,
    ``keras``) fetches only what serving with it reads (``bundle.serving_files``): config.json
    first, then, at that same commit, the one model file and the metrics and pictures. Offline
    (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) the cached snapshot of that revision is
    returned.

    >>> download_bundle("user/sports-classifier-lite0", revision="v1.0", runtime="auto")
    PosixPath('.../models--user--sports-classifier-lite0/snapshots/3f2a.../')
    """
    require_huggingface_hub()
    fetch = dict(cache_dir=cache_dir, token=token, local_files_only=local_files_only)
    if runtime is None:
        path = _snapshot(repo_id, revision, list(bundle.FILES), **fetch)
        _check_downloaded(path, repo_id, revision)
        return path
    path = _snapshot(repo_id, revision, [bundle.CONFIG], **fetch)
    config = _check_config(path, repo_id, revision)
    files = bundle.serving_files(config, runtime)
    path = _snapshot(repo_id, path.name, files, **fetch, shown_revision=revision or "main")  # same commit
    _check_downloaded(path, repo_id, revision, required=files)
    return path


def download_files(repo_id: str, commit: str, names, **fetch) -> Path:
    """More files of an already downloaded bundle, at its commit (e.g. the Keras weights an
    ONNX-served model needs for a Keras Grad-CAM)."""
    require_huggingface_hub()
    return _snapshot(repo_id, commit, list(names), **fetch)


def _snapshot(repo_id: str, revision: str | None, allow: list[str], *, cache_dir=None, token=None,
              local_files_only: bool = False, shown_revision: str | None = None) -> Path:
    """``snapshot_download`` of the ``allow``-ed files, at a commit checked before anything is
    written: the revision is resolved first (``resolve_revision``) and its commit must be 40 hex
    digits, since huggingface_hub names cache files after it (a server answering ``../../x``
    had it write ``x.json`` outside the cache)."""
    from huggingface_hub import HfApi, snapshot_download

    check_revision(revision)
    shown = revision if shown_revision is None else shown_revision
    with hub_errors(repo_id, revision=shown, token=token, cache_dir=cache_dir, local_files_only=local_files_only):
        _guard_session()
        api = HfApi(token=token, library_name="sports_classifier", library_version=__version__)
        # "main" named, as snapshot_download does: /api/models/<repo>/revision/main (mirrors serve that)
        resolved = api.resolve_revision(repo_id, revision=revision or "main", cache_dir=cache_dir, token=token,
                                        local_files_only=local_files_only)
        check_commit(getattr(resolved, "resolved", None), repo_id, shown)
        if not local_files_only and not _offline():
            _check_sizes(api, repo_id, resolved.resolved, allow, shown, token=token)
        folder = snapshot_download(
            repo_id, repo_type="model", revision=resolved, cache_dir=cache_dir, token=token,
            local_files_only=local_files_only, allow_patterns=allow,
            library_name="sports_classifier", library_version=__version__,
        )
    return Path(folder)


_FILE_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _check_file_headers(response) -> None:
    """huggingface_hub names cache files after what a file's answer says: the blob after its
    ``ETag`` / ``X-Linked-Etag``, the snapshot after its ``X-Repo-Commit``. A server answering
    ``ETag: "../../../../x"`` had it write ``x`` outside the cache; such an answer is refused
    before anything is written (``HubError``)."""
    if "/resolve/" not in response.request.url.path:
        return
    commit = response.headers.get("X-Repo-Commit")
    if commit is not None:
        check_commit(commit, response.request.url.path.split("/resolve/")[0].strip("/"))
    for name in ("ETag", "X-Linked-Etag"):
        value = response.headers.get(name)
        if value is not None and not _FILE_TOKEN.fullmatch(value.removeprefix("W/").strip('"')):
            raise HubError(f"the Hub answered with {value[:60]!r} as the {name} of {response.request.url.path}, "
                           "which is not a plain identifier: refusing to use it as a file name; check HF_ENDPOINT")


def _guard_session() -> None:
    """Add ``_check_file_headers`` to huggingface_hub's shared HTTP session (once per session;
    the session, and any client factory the user set, stay as they are)."""
    from huggingface_hub.utils import get_session

    hooks = get_session().event_hooks
    if _check_file_headers not in hooks.setdefault("response", []):
        hooks["response"].append(_check_file_headers)


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _check_sizes(api, repo_id: str, commit: str, allow: list[str], revision: str | None, *,
                 token: str | bool | None = None) -> None:
    """Refuse, before downloading it, a bundle file of the repo over its size cap
    (``bundle.MAX_BYTES``: a 28 MB config.json would fill the cache, then be refused when read).
    The sizes come from the repo's top-level file listing at ``commit``: one request, not retried.
    (``HfApi.list_repo_tree`` retries a refused connection for 23 s; an unreachable Hub here only
    means that the cached copy serves, which snapshot_download then finds, or says is missing.)"""
    from urllib.parse import quote

    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    capped = {name: bundle.MAX_BYTES[name] for name in allow if name in bundle.MAX_BYTES}
    if not capped:
        return
    headers = build_hf_headers(token=token, library_name="sports_classifier", library_version=__version__)
    try:
        response = get_session().get(f"{api.endpoint}/api/models/{repo_id}/tree/{quote(commit, safe='')}",
                                     headers=headers)
    except _network_errors():
        return
    hf_raise_for_status(response)
    listing = response.json()
    if not isinstance(listing, list) or not all(isinstance(entry, dict) for entry in listing):
        raise TypeError(f"a file listing that is not a list of entries: {str(listing)[:80]}")  # -> "cannot be read"
    for entry in listing:
        cap = capped.get(entry.get("path"))
        size = (entry.get("lfs") or {}).get("size") or entry.get("size")
        if cap is not None and isinstance(size, int) and size > cap:
            raise BundleError(f"{entry['path']} of Hub repo {_where(repo_id, revision)} is {size / 2**20:.1f} MB; a "
                              f"bundle's {entry['path']} is at most {cap / 2**20:.0f} MB: refusing to download it")


def check_commit(commit, repo_id: str, revision: str | None = None) -> str:
    """``commit`` when it is a full commit hash (40 lowercase hex digits); ``HubError`` otherwise."""
    from huggingface_hub.file_download import REGEX_COMMIT_HASH

    if not isinstance(commit, str) or not REGEX_COMMIT_HASH.fullmatch(commit):
        raise HubError(f"the Hub answered with {str(commit)[:60]!r} as the commit of {_where(repo_id, revision)}, "
                       "which is not a commit hash (40 hex digits): refusing to use it; check HF_ENDPOINT")
    return commit


# -- Hub errors: one mapping from what went wrong to the error that says what to do ---------------


@dataclass(frozen=True)
class HubCall:
    """What was being done when the Hub failed: the words of the message."""

    repo_id: str
    revision: str | None = None
    action: str = "download"  # or "upload"
    kind: str = "model repo"  # or "Space"
    cache_dir: str | Path | None = None
    local_files_only: bool = False

    @property
    def where(self) -> str:
        return _where(self.repo_id, self.revision)


@contextmanager
def hub_errors(repo_id: str, *, token: str | bool | None = None, **call):
    """Run a Hub call; whatever it raises leaves as this package's error (``hub_error``), with
    every token scrubbed from its text and no chained exception that could still hold one.
    Errors this package raised on purpose pass through unchanged."""
    from .errors import SportsClassifierError

    try:
        yield
    except SportsClassifierError:
        raise
    except Exception as exc:
        mapped = hub_error(exc, HubCall(repo_id, **call))
        raise type(mapped)(_scrub(str(mapped), token)) from None


def hub_error(exc: Exception, call: HubCall) -> Exception:
    """The one mapping from what a Hub call raised to ``HubNotFoundError`` / ``HubAuthError`` /
    ``HubUnavailableError`` / ``HubError`` (``UserInputError`` for an id the Hub library
    refused), by cause first, then by HTTP status (``_status_error``), as huggingface_hub's
    ``hf_raise_for_status`` maps a response. Anything else the Hub library raised means the
    Hub's answer could not be read (a listing that is not a list, a missing field): a
    ``HubError`` saying so, never a traceback."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    endpoint = constants.ENDPOINT
    cache = call.cache_dir or constants.HF_HUB_CACHE
    upload = call.action == "upload"
    if isinstance(exc, (hf.LocalEntryNotFoundError, hf.RevisionResolutionError)) and isinstance(
            exc.__cause__, hf.HfHubHTTPError):
        exc = exc.__cause__  # the Hub answered, with an error, and nothing was cached: say which
    if isinstance(exc, hf.LocalTokenNotFoundError):
        return HubAuthError(f"uploading needs a Hugging Face token with write access: {LOGIN_HINT}")
    if isinstance(exc, hf.HFValidationError):
        return UserInputError(f"{call.repo_id!r} is not a valid Hub repo id ({exc}); expected user/name")
    if isinstance(exc, hf.OfflineModeIsEnabled) and upload:
        return HubError(f"cannot upload to {call.kind} {call.repo_id!r}: HF_HUB_OFFLINE=1 is set; unset it to upload")
    if isinstance(exc, hf.GatedRepoError):
        return HubAuthError(f"{call.repo_id!r} is a gated repo and this account has no access to it: request "
                            f"access at {endpoint}/{call.repo_id}, then log in ({LOGIN_HINT})")
    if isinstance(exc, hf.RepositoryNotFoundError):
        if upload:
            return HubNotFoundError(f"cannot write to {call.kind} {call.repo_id!r} on {endpoint}: it does not exist "
                                    "or this token cannot see it; check the namespace (your user or an org you "
                                    f"belong to) and {LOGIN_HINT}")
        return HubNotFoundError(f"model repo {call.repo_id!r} not found on {endpoint} (or it is private and no valid "
                                "token was sent). Check the id (user/name, case-sensitive); for a private repo "
                                f"{LOGIN_HINT}")
    if isinstance(exc, hf.RevisionNotFoundError):
        from huggingface_hub.file_download import REGEX_COMMIT_HASH

        what = "commit" if call.revision and REGEX_COMMIT_HASH.fullmatch(call.revision) else "revision"
        return HubNotFoundError(f"{what} {call.revision!r} not found in {call.repo_id!r}: give an existing branch, "
                                f"tag or full commit hash (see {endpoint}/{call.repo_id}/tree/main)")
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return HubNotFoundError(f"a file of {call.where} that the Hub listed could not be downloaded (entry not "
                                "found): the repo probably changed during the download; try again or pin a "
                                "commit with revision=...")
    if isinstance(exc, hf.HfHubHTTPError):
        return _status_error(exc, call, endpoint, cache)
    if isinstance(exc, hf.IncompleteSnapshotError):
        return HubUnavailableError(
            f"the cached copy of {call.where} in {cache} is incomplete (an interrupted download, or files this "
            "use needs that an earlier one did not fetch) and the Hub cannot be reached to finish it: "
            "connect once more and load it again")
    if isinstance(exc, (hf.LocalEntryNotFoundError, hf.RevisionResolutionError)):
        if call.local_files_only:
            return HubError(f"{call.where} is not in the local cache ({cache}) and local_files_only=True forbids "
                            "downloading it: load it once with network access, or give a local bundle folder")
        if constants.is_offline_mode():
            return HubError(f"{call.where} is not in the local cache ({cache}) and HF_HUB_OFFLINE=1 forbids "
                            "downloading it: load it once with network access (unset HF_HUB_OFFLINE), or give "
                            "a local bundle folder")
        return HubUnavailableError(
            f"could not reach the Hub at {endpoint} to download {call.where}, and there is no cached copy in "
            f"{cache}: check the network connection (or HF_ENDPOINT / proxy settings). Once downloaded, "
            "the model also loads offline")
    if isinstance(exc, _network_errors()):
        if upload:
            return HubUnavailableError(f"could not reach the Hub at {endpoint} to upload to {call.repo_id!r} "
                                       f"({_first_line(exc)}): check the network connection (or HF_ENDPOINT / "
                                       "proxy settings); nothing was committed")
        return HubUnavailableError(f"the connection to {endpoint} failed while downloading {call.where} "
                                   f"({_first_line(exc)}): try again; files already downloaded stay in the cache")
    if isinstance(exc, OSError) and not upload:
        return HubError(f"could not download {call.where} into the cache {cache}: {exc}")
    return HubError(f"the Hub at {endpoint} sent an answer for {call.where} that cannot be read "
                    f"({_first_line(exc)}) while {'uploading' if upload else 'downloading'}: check HF_ENDPOINT, "
                    "or try again later")


def _status_error(exc, call: HubCall, endpoint: str, cache) -> HubError:
    """An HTTP error answer -> the error that says what to do, by status."""
    status = _status(exc)
    upload = call.action == "upload"
    if status == 401:
        return HubAuthError(f"the Hub rejected the token {'while uploading to' if upload else 'for'} {call.where} "
                            f"(HTTP 401): it is invalid or expired; check it, or log in again ({LOGIN_HINT})")
    if status == 403 and upload:
        return HubAuthError(f"the token has no write access to {call.kind} {call.where} (HTTP 403): use a token "
                            "with the write role (or fine-grained write access to this repo/namespace)")
    if status == 403:
        return HubAuthError(f"access to {call.where} denied (HTTP 403): the token lacks read access to this repo "
                            f"(a fine-grained token needs read access to it); {LOGIN_HINT}")
    if upload:
        server = getattr(exc, "server_message", None)
        kind_of = HubUnavailableError if isinstance(status, int) and (status >= 500 or status == 429) else HubError
        return kind_of(f"the Hub at {endpoint} refused the upload to {call.repo_id!r} (HTTP {status}): "
                       f"{server or _first_line(exc)}; nothing was committed")
    no_copy = f"; there is no cached copy in {cache}"
    if status == 404:
        if call.revision:
            return HubNotFoundError(
                f"the Hub at {endpoint} has no {call.where} (HTTP 404): the repo or the revision {call.revision!r} "
                f"does not exist (or the repo is private and no valid token was sent); check the id and "
                f"give an existing branch, tag or full commit hash; for a private repo {LOGIN_HINT}")
        return HubNotFoundError(
            f"model repo {call.repo_id!r} not found on {endpoint} (HTTP 404; or it is private and no valid token "
            f"was sent). Check the id (user/name, case-sensitive); for a private repo {LOGIN_HINT}")
    if status == 429:
        return HubUnavailableError(f"the Hub at {endpoint} is rate-limiting requests (HTTP 429) for {call.where}"
                                   f"{no_copy}: wait a few minutes, or log in ({LOGIN_HINT}) for a higher limit")
    if isinstance(status, int) and status >= 500:
        return HubUnavailableError(f"the Hub at {endpoint} had a server error (HTTP {status}) for {call.where}"
                                   f"{no_copy}: try again later (https://status.huggingface.co for the Hub)")
    return HubError(f"the Hub at {endpoint} answered HTTP {status} for {call.where} ({_first_line(exc)}); "
                    "try again later")


def _check_config(path: Path, repo_id: str, revision: str | None):
    """The bundle config of a downloaded repo, or a BundleError saying what the repo is instead."""
    where = _where(repo_id, revision)
    cfg = path / bundle.CONFIG
    found = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    advice = "check the repo id, or publish a bundle there with `sports-classifier push`"
    if not cfg.is_file():
        raise BundleError(f"Hub repo {where} is not a sports_classifier bundle: it has no {bundle.CONFIG} "
                          f"(bundle files found: {found or 'none'}); {advice}")
    try:
        data = bundle.read_json(bundle.member(path, bundle.CONFIG))
    except BundleError as exc:  # not JSON, nested too deeply, a link out of the snapshot
        raise BundleError(f"{bundle.CONFIG} of Hub repo {where}: {exc}; push the bundle again") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"Hub repo {where} is not a sports_classifier bundle: its {bundle.CONFIG} lacks "
                          f'"format": "{BUNDLE_FORMAT}" (a model of another library?); {advice}')
    try:
        return bundle.read_config(path)
    except BundleError as exc:
        raise BundleError(f"Hub repo {where}: {exc}") from None


def _check_downloaded(path: Path, repo_id: str, revision: str | None, *, required=None) -> None:
    """``required``: the files this use reads (default: every file config.json records)."""
    config = _check_config(path, repo_id, revision)
    wanted = config.files_sha256 if required is None else [n for n in required if n in config.files_sha256]
    missing = sorted(name for name in wanted if not (path / name).is_file())
    if missing:
        raise BundleError(f"Hub repo {_where(repo_id, revision)} is incomplete: {bundle.CONFIG} records "
                          f"{missing} but the repo has no such file; push the bundle again "
                          "(`sports-classifier push`)")


# -- upload ------------------------------------------------------------------------------------


def _require_token(token: str | bool | None, action: str) -> None:
    """Fail before any network call when no token can be found at all."""
    from huggingface_hub import get_token

    if token is False or (token is None or token is True) and get_token() is None:
        raise HubAuthError(f"{action} needs a Hugging Face token with write access: {LOGIN_HINT}")


CARD_CHOICES = ("refuse", "overwrite", "keep")  # what a push does with a hand-edited README.md


def upload_bundle(folder: str | Path, repo_id: str, *, private: bool | None = None,
                  token: str | bool | None = None, revision: str | None = None,
                  commit_message: str | None = None, existing_card: str = "refuse",
                  progress: bool = False) -> str:
    """Upload the bundle at ``folder`` to the model repo ``repo_id`` in one commit; return its URL.

    The repo is created if needed (and the branch ``revision``, if given). Exactly the bundle's
    files are uploaded; bundle files the repo holds but this bundle lacks are deleted in the
    same commit, so the repo always holds one consistent bundle.

    The model card: a README.md on the Hub that is not the card sports_classifier generated
    (someone edited it, or another tool wrote it) is never replaced silently. ``existing_card``:
    ``refuse`` (default) raises ``HubCardConflictError`` before anything is sent; ``overwrite``
    replaces it with the generated card; ``keep`` uploads the bundle and leaves that README.md.

    The generated card is uploaded with ``repo_id`` written into its snippets (a card edited by
    hand in ``folder`` is uploaded as it is). ``progress``: a bar while the files are read and
    hashed, then a line for the commit (plain-HTTP uploads show nothing else); a file unchanged
    since the last push is not sent, and a push that changes nothing makes no commit.

    >>> upload_bundle("runs/lite0", "user/sports-classifier-lite0")
    'https://huggingface.co/user/sports-classifier-lite0/commit/4d1c...'
    """
    require_huggingface_hub()
    from huggingface_hub import HfApi

    repo_id = parse_model_source(repo_id, hub_only=True, revision_allowed=False).location
    check_revision(revision)
    if existing_card not in CARD_CHOICES:
        raise UserInputError(f"existing_card must be one of {CARD_CHOICES}, got {existing_card!r}")
    folder = Path(folder)
    config = bundle.read_config(folder)
    # Never publish a corrupt bundle, nor what a link in it points to outside it.
    files = [name for name in bundle.FILES if bundle.member(folder, name) is not None]
    for name in bundle.CHECKSUMMED:
        if name in files:
            bundle.verified_file(folder, config, name)
    if bundle.CARD not in files:
        raise BundleError(f"{folder} has no model card ({bundle.CARD}); re-save it with "
                          "Classifier.save_pretrained or push with Classifier.push_to_hub")
    _require_token(token, "uploading a model")
    message = commit_message or (f"Upload sports_classifier bundle ({config.architecture}, "
                                 f"{config.num_classes} classes)")
    api = HfApi(token=token, library_name="sports_classifier", library_version=__version__)
    with hub_errors(repo_id, token=token, revision=revision, action="upload"):
        if existing_card != "overwrite" and _hand_edited_card(api, repo_id, revision):
            if existing_card == "refuse":
                raise HubCardConflictError(
                    f"the {bundle.CARD} of {_where(repo_id, revision)} on the Hub is not the model card "
                    "sports_classifier generated (it was edited by hand, or another tool wrote it), and "
                    "pushing would replace it: push with --keep-card (existing_card='keep') to upload the "
                    "bundle and leave that README.md as it is, or --overwrite-card "
                    "(existing_card='overwrite') to replace it with the generated card")
            files.remove(bundle.CARD)
        stale = [name for name in bundle.FILES if name not in files and name != bundle.CARD]
        if bundle.CARD not in files and existing_card != "keep":
            stale.append(bundle.CARD)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        with _staged(folder, config, files, repo_id, progress=progress) as staged:
            start = time.perf_counter()
            if progress:
                size = sum((staged / name).stat().st_size for name in files)
                print(f"push: one commit of {len(files)} file(s), {size / 1e6:.1f} MB, to {repo_id}"
                      f"{f' ({revision})' if revision else ''}; files the repo already holds unchanged are "
                      "not sent", file=sys.stderr, flush=True)
            commit = api.upload_folder(
                repo_id=repo_id, repo_type="model", folder_path=staged, revision=revision,
                commit_message=message, allow_patterns=files, delete_patterns=stale or None,
            )
            if progress:
                print(f"push: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return str(getattr(commit, "commit_url", commit))


@contextmanager
def _staged(folder: Path, config, files: list[str], repo_id: str, *, progress: bool):
    """What a push uploads, in a temporary folder: the bundle's files (hard links where the file
    system allows, else copies; a progress bar while they are read) and the generated card
    re-rendered with ``repo_id`` in its snippets (a card edited by hand goes as it is)."""
    import shutil
    import tempfile

    from tqdm.auto import tqdm

    from .card import is_generated_card, render_model_card

    paths = {name: bundle.member(folder, name) for name in files}
    with tempfile.TemporaryDirectory(prefix="sports-classifier-push-") as tmp:
        staged = Path(tmp)
        with tqdm(total=sum(p.stat().st_size for p in paths.values()), unit="B", unit_scale=True,
                  desc="push: reading files", disable=not progress, file=sys.stderr) as bar:
            for name, path in paths.items():
                text = path.read_text(encoding="utf-8", errors="replace") if name == bundle.CARD else None
                if text is not None and is_generated_card(text):
                    present = sorted(p.name for p in folder.iterdir())
                    (staged / name).write_text(render_model_card(config.to_dict(), bundle.read_metrics(folder),
                                                                 files=present, repo_id=repo_id), encoding="utf-8")
                else:
                    try:
                        os.link(path, staged / name)
                    except OSError:  # another file system, or no hard links: a copy
                        shutil.copyfile(path, staged / name)
                bar.update(path.stat().st_size)
        yield staged


def _hand_edited_card(api, repo_id: str, revision: str | None) -> bool:
    """True when the repo (at ``revision``) has a README.md that is not a card this package
    generated (``card.is_generated_card``). No repo, branch or README: False."""
    import tempfile

    from huggingface_hub import errors as hf

    from .card import is_generated_card

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = api.hf_hub_download(repo_id, bundle.CARD, repo_type="model", revision=revision,
                                       local_dir=tmp)
        except (hf.RepositoryNotFoundError, hf.RevisionNotFoundError, hf.RemoteEntryNotFoundError):
            return False
        except hf.HfHubHTTPError as exc:
            if _status(exc) == 404:
                return False
            raise
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    return not is_generated_card(text)


# -- Spaces (what sports_classifier.space needs from the Hub) -------------------------------------


def served_files(repo_id: str, revision: str | None = None, *, token: str | bool | None = None) -> tuple[str, ...]:
    """The files serving ``repo_id`` downloads with ONNX Runtime (``bundle.serving_files``, those
    the repo has), read from the Hub now: its config.json says which ONNX model is served (the
    int8 one when present). A Space preloads exactly these (``preload_from_hub``)."""
    require_huggingface_hub()
    from huggingface_hub import HfApi

    folder = _snapshot(repo_id, revision, [bundle.CONFIG], token=token)  # config.json only
    config = _check_config(folder, repo_id, revision)
    with hub_errors(repo_id, revision=revision, token=token):
        present = set(HfApi(token=token).list_repo_files(repo_id, revision=folder.name))
    return tuple(name for name in bundle.serving_files(config, "auto") if name in present)


def upload_space(folder: str | Path, space_id: str, *, variables: Mapping[str, str] | None = None,
                 token: str | bool | None = None, private: bool | None = None,
                 commit_message: str = "Upload a Space") -> str:
    """Upload ``folder`` to the Gradio Space ``space_id`` (created if needed) in one commit, then
    set its ``variables`` (Space variables, e.g. ``SPORTS_CLASSIFIER_MODELS``); return its URL."""
    require_huggingface_hub()
    from huggingface_hub import HfApi

    space_id = parse_model_source(space_id, hub_only=True, revision_allowed=False, kind="Space").location
    _require_token(token, "pushing a Space")
    api = HfApi(token=token, library_name="sports_classifier", library_version=__version__)
    with hub_errors(space_id, token=token, action="upload", kind="Space"):
        url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        api.upload_folder(repo_id=space_id, repo_type="space", folder_path=folder, commit_message=commit_message,
                          ignore_patterns=["*__pycache__*", "*.pyc"])
        for key, value in (variables or {}).items():
            api.add_space_variable(space_id, key, value,
                                   description="models the app serves (hf:user/repo@rev, comma-separated)"
                                   if key == MODELS_ENV else None)
    return str(url)
