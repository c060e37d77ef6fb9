"""Connecting to Ray: one place that decides which cluster a job runs on."""

from __future__ import annotations

import logging
import time

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
    # A cluster started here serves only this machine: its nodes advertise 127.0.0.1 (Ray's own
    # services still listen on every interface in Ray 2.60; Ray's default token authentication
    # guards them, see docs/scale.md).
    kwargs = {"include_dashboard": False, "_node_ip_address": "127.0.0.1"} if address in (None, "", "local") else {}
    if num_cpus is not None and address in (None, "", "local"):
        kwargs["num_cpus"] = num_cpus
    ray.init(address=None if address in ("", "local") else address, log_to_driver=log_to_driver,
             configure_logging=False, **kwargs)
    seconds = time.perf_counter() - start
    log.info("connected to Ray (%s) in %.1f s: %s CPUs", address or "local",
             seconds, ray.cluster_resources().get("CPU"))
    return True, seconds
