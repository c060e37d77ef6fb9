"""Connecting to Ray: one place that decides which cluster a job runs on."""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

log = logging.getLogger(__name__)


def connect(address: str | None, *, num_cpus: int | None = None, log_to_driver: bool = False) -> tuple[bool, float]:
    """Join the cluster at ``address`` (``auto``: the running one; ``ray://host:10001``: a
    remote one through Ray Client; None: Ray's default, a new local cluster when none runs).
    ``log_to_driver``: what the tasks and actors print shows here (Ray Train's workers print
    their per-epoch lines); off by default, where the driver draws its own progress bar.

    Returns (whether this call started Ray and so must shut it down, seconds it took).
    The dashboard is never started by us: jobs do not need it.
    """
    import ray

    if ray.is_initialized():
        return False, 0.0
    start = time.perf_counter()
    local = address in (None, "", "local")
    # A cluster started here is reachable from the network: Ray 2.60 replaces 127.0.0.1 by the
    # machine's address for its GCS and raylets (services.resolve_ip_for_localhost) and listens
    # on every interface, so only its token authentication guards it (docs/scale.md), and the
    # token must be this user's alone.
    kwargs = {"include_dashboard": False} if local else {}
    if local:
        private_token_file()
    if num_cpus is not None and local:
        kwargs["num_cpus"] = num_cpus
    ray.init(address=None if address in ("", "local") else address, log_to_driver=log_to_driver,
             configure_logging=False, **kwargs)
    seconds = time.perf_counter() - start
    log.info("connected to Ray (%s) in %.1f s: %s CPUs", address or "local",
             seconds, ray.cluster_resources().get("CPU"))
    return True, seconds


def private_token_file(home: Path | None = None) -> Path | None:
    """Make Ray's default token file, ``~/.ray/auth_token``, readable by its owner only: create
    it (mode 0600, in a 0700 folder) before Ray would create it world-readable (0644), or
    tighten an existing one. None when the token comes from elsewhere (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH``) or authentication is off (``RAY_AUTH_MODE=disabled``)."""
    if (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled"):
        return None
    path = (home or Path.home()) / ".ray" / "auth_token"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        if not path.is_symlink() and path.is_file() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
            log.info("%s was readable by others; now by its owner only", path)
        return path
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path
