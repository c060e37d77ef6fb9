"""The package's exceptions.

Each one also inherits the builtin a caller would naturally catch (``ValueError``,
``FileNotFoundError`` ...), so ``except ValueError`` keeps working for code that does not know
this package. Messages say what was received, what was expected and how to fix it.
"""

from __future__ import annotations


class SportsClassifierError(Exception):
    """Base class of every error raised on purpose by ``sports_classifier``."""


class ConfigError(SportsClassifierError, ValueError):
    """A configuration has unknown keys, missing keys or values out of range."""


class UnknownBackboneError(SportsClassifierError, KeyError):
    """A backbone name is not in the backbone catalogue (``models.backbones``)."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(SportsClassifierError, RuntimeError):
    """Pretrained weights cannot be obtained (offline, or a missing local file)."""


class DatasetLayoutError(SportsClassifierError, ValueError):
    """A dataset folder is not in the expected ``split/class/image`` layout."""


class ImageDecodeError(SportsClassifierError, ValueError):
    """An input cannot be read as an image (unreadable, truncated, too large, wrong type)."""


class BundleError(SportsClassifierError, ValueError):
    """A model bundle is missing files, is corrupt or was written by an unsupported version."""


class HubError(SportsClassifierError, RuntimeError):
    """A Hugging Face Hub operation failed (missing repo, missing file, no network, auth)."""


class ExportError(SportsClassifierError, RuntimeError):
    """Exporting a model to another format failed or changed its outputs."""


class UserInputError(SportsClassifierError, ValueError):
    """Something the person using the CLI or the app can fix (no image, no model chosen, a bad option)."""


class UnreadablePhotoError(UserInputError):
    """The photo a person gave cannot be decoded (the app then clears it instead of showing a broken image)."""


class ModelLoadError(SportsClassifierError, RuntimeError):
    """A model could not be loaded (the message says why); the app reports it and serves the others."""


class HubNotFoundError(HubError, LookupError):
    """The Hub has no such repo, revision or file (HTTP 404), or hides a private repo from this token."""


class HubAuthError(HubError, PermissionError):
    """The Hub refused the token or the access (HTTP 401 / 403, a gated repo)."""


class HubUnavailableError(HubError, ConnectionError):
    """The Hub could not be reached, or answered with a server error (HTTP 5xx)."""


class HubCardConflictError(HubError):
    """A push would replace a model card (README.md) someone edited on the Hub."""


class ModelTimeoutError(SportsClassifierError, TimeoutError):
    """A model did not answer within its time limit and its run was stopped (a network that
    never finishes: the app takes it out of service)."""


def install_extra(extra: str) -> str:
    """How to add an install extra, in one phrase for every message that needs it: the project is
    installed from a checkout or from its wheel (it is not on PyPI)."""
    return f"pip install -e \".[{extra}]\" in a checkout (or the wheel with [{extra}])"
