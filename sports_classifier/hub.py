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

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from . import bundle
from .version import __version__
from .config import BUNDLE_FORMAT
from .errors import BundleError, HubError, UserInputError

LOGIN_HINT = "pass token=..., set HF_TOKEN, or run `hf auth login`"
_TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{8,}")


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


def parse_model_source(text: str, *, root: str | Path | None = None) -> ModelSource:
    """Parse one model source. ``hf:user/repo@rev`` is always the Hub; a bare ``user/repo[@rev]``
    is the Hub unless such a local folder exists; anything else is a folder (relative ones
    resolve against ``root``, default the working folder). Raises ``UserInputError`` on a
    malformed Hub id.

    >>> parse_model_source("hf:me/sports@v1")
    ModelSource(location='me/sports', hub=True, revision='v1', name='me/sports@v1')
    """
    raw = str(text).strip()
    if not raw:
        raise UserInputError("empty model source: give a bundle folder or hf:user/repo[@revision]")
    explicit = raw.startswith(HUB_PREFIX)
    body = raw[len(HUB_PREFIX):] if explicit else raw
    repo, at, revision = body.partition("@")
    path = Path(raw).expanduser()
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    looks_hub = not raw.startswith((".", "/", "~")) and is_repo_id(repo) and (not at or revision)
    if explicit or (looks_hub and not path.exists()):
        if not is_repo_id(repo) or (at and not revision):
            raise UserInputError(f"bad Hub model {raw!r}: expected hf:user/repo or hf:user/repo@revision "
                                 "(letters, digits, '-', '_', '.'; at most 96 characters)")
        return ModelSource(repo, hub=True, revision=revision or None, name=repo + (f"@{revision}" if at else ""))
    return ModelSource(str(path), name=path.name or raw)


def parse_model_sources(text: str, *, root: str | Path | None = None) -> list[ModelSource]:
    """Comma-separated sources (``models/a,hf:user/repo@rev``), with unique display names."""
    sources = [parse_model_source(part, root=root) for part in text.split(",") if part.strip()]
    seen: dict[str, int] = {}
    out = []
    for source in sources:
        n = seen.get(source.name, 0)
        seen[source.name] = n + 1
        out.append(source if n == 0 else ModelSource(source.location, source.hub, source.revision,
                                                      f"{source.name} ({n + 1})"))
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
    every bundle in ``root/models`` (models/DEFAULT first)."""
    env = os.environ if env is None else env
    text = cli_value if cli_value else env.get(MODELS_ENV, "")
    if text.strip():
        return parse_model_sources(text, root=root)
    return bundled_models(Path(root) / "models")


# -- download ----------------------------------------------------------------------------------


def download_bundle(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
                    token: str | bool | None = None, local_files_only: bool = False) -> Path:
    """Download (or find in the cache) the bundle at ``repo_id`` and return its local folder.

    Only the bundle's own files are fetched. Offline (``HF_HUB_OFFLINE=1`` or
    ``local_files_only=True``) the cached snapshot of that revision is returned.

    >>> download_bundle("user/sports-classifier-lite0", revision="v1.0")
    PosixPath('.../models--user--sports-classifier-lite0/snapshots/3f2a.../')
    """
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id, repo_type="model", revision=revision, cache_dir=cache_dir, token=token,
            local_files_only=local_files_only, allow_patterns=list(bundle.FILES),
            library_name="sports_classifier", library_version=__version__,
        )
    except Exception as exc:  # mapped to what the user can act on; unknown errors re-raised as is
        mapped = _download_error(exc, repo_id, revision, cache_dir=cache_dir,
                                 local_files_only=local_files_only)
        if mapped is None:
            raise
        raise type(mapped)(_scrub(str(mapped), token)) from None
    path = Path(folder)
    _check_downloaded(path, repo_id, revision)
    return path


def _download_error(exc: Exception, repo_id: str, revision: str | None, *, cache_dir,
                    local_files_only: bool) -> Exception | None:
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    where = _where(repo_id, revision)
    endpoint = constants.ENDPOINT
    cache = cache_dir or constants.HF_HUB_CACHE
    if isinstance(exc, hf.GatedRepoError):
        return HubError(
            f"{repo_id!r} is a gated repo and this account has no access to it: request access at "
            f"{endpoint}/{repo_id}, then log in ({LOGIN_HINT})"
        )
    if isinstance(exc, hf.RepositoryNotFoundError):
        return HubError(
            f"model repo {repo_id!r} not found on {endpoint} (or it is private and no valid token was "
            f"sent). Check the id (user/name, case-sensitive); for a private repo {LOGIN_HINT}"
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return HubError(
            f"revision {revision!r} not found in {repo_id!r}: give an existing branch, tag or full "
            f"commit hash (see {endpoint}/{repo_id}/tree/main)"
        )
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return HubError(
            f"a file of {where} that the Hub listed could not be downloaded (entry not found): the repo "
            "probably changed during the download; try again or pin a commit with revision=..."
        )
    if isinstance(exc, hf.IncompleteSnapshotError):
        return HubError(
            f"the cached copy of {where} in {cache} is incomplete (an interrupted download) and the Hub "
            "cannot be reached to finish it: connect once more and load it again"
        )
    if isinstance(exc, hf.LocalEntryNotFoundError):
        if local_files_only:
            return HubError(
                f"{where} is not in the local cache ({cache}) and local_files_only=True forbids "
                "downloading it: load it once with network access, or give a local bundle folder"
            )
        if constants.is_offline_mode():
            return HubError(
                f"{where} is not in the local cache ({cache}) and HF_HUB_OFFLINE=1 forbids downloading "
                "it: load it once with network access (unset HF_HUB_OFFLINE), or give a local bundle folder"
            )
        return HubError(
            f"could not reach the Hub at {endpoint} to download {where}, and there is no cached copy in "
            f"{cache}: check the network connection (or HF_ENDPOINT / proxy settings). Once downloaded, "
            "the model also loads offline"
        )
    if isinstance(exc, hf.HFValidationError):
        return HubError(f"{repo_id!r} is not a valid Hub repo id ({exc}); expected user/name")
    if isinstance(exc, hf.HfHubHTTPError):
        status = _status(exc)
        if status == 401:
            return HubError(f"the Hub rejected the token for {where} (HTTP 401): check it, or log in "
                            f"again ({LOGIN_HINT})")
        if status == 403:
            return HubError(f"access to {where} denied (HTTP 403): the token lacks read access to this repo")
        return HubError(f"the Hub at {endpoint} answered HTTP {status} for {where} ({_first_line(exc)}); "
                        "try again later")
    if isinstance(exc, _network_errors()):
        return HubError(
            f"the connection to {endpoint} failed while downloading {where} ({_first_line(exc)}): try "
            "again; files already downloaded stay in the cache"
        )
    if isinstance(exc, OSError):
        return HubError(f"could not download {where} into the cache {cache}: {exc}")
    return None


def _check_downloaded(path: Path, repo_id: str, revision: str | None) -> None:
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
        config = bundle.read_config(path)
    except BundleError as exc:
        raise BundleError(f"Hub repo {where}: {exc}") from None
    missing = sorted(name for name in config.files_sha256 if not (path / name).is_file())
    if missing:
        raise BundleError(f"Hub repo {where} is incomplete: {bundle.CONFIG} records {missing} but the repo "
                          "has no such file; push the bundle again (`sports-classifier push`)")


# -- upload ------------------------------------------------------------------------------------


def _require_token(token: str | bool | None, action: str) -> None:
    """Fail before any network call when no token can be found at all."""
    from huggingface_hub import get_token

    if token is False or (token is None or token is True) and get_token() is None:
        raise HubError(f"{action} needs a Hugging Face token with write access: {LOGIN_HINT}")


def upload_bundle(folder: str | Path, repo_id: str, *, private: bool | None = None,
                  token: str | bool | None = None, revision: str | None = None,
                  commit_message: str | None = None) -> str:
    """Upload the bundle at ``folder`` to the model repo ``repo_id`` in one commit; return its URL.

    The repo is created if needed (and the branch ``revision``, if given). Exactly the bundle's
    files are uploaded; bundle files the repo holds but this bundle lacks are deleted in the
    same commit, so the repo always holds one consistent bundle.

    >>> upload_bundle("runs/lite0", "user/sports-classifier-lite0")
    'https://huggingface.co/user/sports-classifier-lite0/commit/4d1c...'
    """
    from huggingface_hub import HfApi

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
    stale = [name for name in bundle.FILES if name not in files]
    _require_token(token, "uploading a model")
    message = commit_message or (f"Upload sports_classifier bundle ({config.architecture}, "
                                 f"{config.num_classes} classes)")
    api = HfApi(token=token, library_name="sports_classifier", library_version=__version__)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, repo_type="model", folder_path=folder, revision=revision,
            commit_message=message, allow_patterns=files, delete_patterns=stale or None,
        )
    except Exception as exc:
        mapped = _upload_error(exc, repo_id, "model repo")
        if mapped is None:
            raise
        raise HubError(_scrub(str(mapped), token)) from None
    return str(getattr(commit, "commit_url", commit))


def _upload_error(exc: Exception, repo_id: str, kind: str) -> HubError | None:
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    endpoint = constants.ENDPOINT
    if isinstance(exc, hf.LocalTokenNotFoundError):
        return HubError(f"uploading needs a Hugging Face token with write access: {LOGIN_HINT}")
    if isinstance(exc, hf.HFValidationError):
        return HubError(f"{repo_id!r} is not a valid Hub repo id ({exc}); expected user/name")
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return HubError(f"cannot upload to {kind} {repo_id!r}: HF_HUB_OFFLINE=1 is set; unset it to upload")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return HubError(f"cannot write to {kind} {repo_id!r} on {endpoint}: it does not exist or this token "
                        f"cannot see it; check the namespace (your user or an org you belong to) and {LOGIN_HINT}")
    if isinstance(exc, hf.HfHubHTTPError):
        status = _status(exc)
        if status == 401:
            return HubError(f"the Hub rejected the token while uploading to {repo_id!r} (HTTP 401): it is "
                            f"invalid or expired; {LOGIN_HINT}")
        if status == 403:
            return HubError(f"the token has no write access to {kind} {repo_id!r} (HTTP 403): use a token "
                            "with the write role (or fine-grained write access to this repo/namespace)")
        server = getattr(exc, "server_message", None)
        return HubError(f"the Hub at {endpoint} refused the upload to {repo_id!r} (HTTP {status}): "
                        f"{server or _first_line(exc)}; nothing was committed")
    if isinstance(exc, _network_errors()):
        return HubError(f"could not reach the Hub at {endpoint} to upload to {repo_id!r} "
                        f"({_first_line(exc)}): check the network connection (or HF_ENDPOINT / proxy "
                        "settings); nothing was committed")
    return None
