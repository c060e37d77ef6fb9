"""A throw-away Ray cluster on 127.0.0.1 for tests: a head node and optionally a second node,
each a ``ray start --block`` process in its own session, on fixed ports, stopped by killing
exactly those process groups (never ``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HEAD_PORT = 8050
# (node-manager, object-manager, client server, agent listen, agent grpc, runtime env, metrics)
HEAD_PORTS = (8051, 8052, 8053, 8054, 8055, 8056, 8057)
NODE_PORTS = (8061, 8062, 8063, 8064, 8065, 8066, 8067)
ADDRESS = f"127.0.0.1:{HEAD_PORT}"


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _ports(ports, workers: tuple[int, int]) -> list[str]:
    nm, om, client, listen, grpc, env, metrics = ports
    return ["--node-manager-port", str(nm), "--object-manager-port", str(om),
            "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(listen),
            "--dashboard-agent-grpc-port", str(grpc), "--runtime-env-agent-port", str(env),
            "--metrics-export-port", str(metrics),
            "--min-worker-port", str(workers[0]), "--max-worker-port", str(workers[1])]


class LocalRayCluster:
    """``with LocalRayCluster(head_cpus=2) as address:`` -> ``ray.init(address=address)``."""

    def __init__(self, head_cpus: float = 2, node_cpus: float = 0, temp_dir: str | None = None,
                 timeout: float = 90):
        self.head_cpus, self.node_cpus, self.timeout = head_cpus, node_cpus, timeout
        self.temp_dir = temp_dir or f"/tmp/ray-h16-{os.getpid()}"
        self.procs: list[subprocess.Popen] = []
        self.startup_seconds = 0.0

    def _start(self, args: list[str]) -> None:
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        self.procs.append(subprocess.Popen([_ray_cli(), "start", "--block", "--disable-usage-stats", *args],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True))

    def __enter__(self) -> str:
        start = time.perf_counter()
        self._start(["--head", "--node-ip-address", "127.0.0.1", "--port", str(HEAD_PORT),
                     "--num-cpus", str(self.head_cpus), "--include-dashboard", "false",
                     "--temp-dir", self.temp_dir, *_ports(HEAD_PORTS, (20000, 20199))])
        self._wait_cpus(self.head_cpus)
        if self.node_cpus:
            self._start(["--address", ADDRESS, "--node-ip-address", "127.0.0.1",
                         "--num-cpus", str(self.node_cpus), *_ports(NODE_PORTS, (20200, 20399))])
            self._wait_cpus(self.head_cpus + self.node_cpus)
        self.startup_seconds = time.perf_counter() - start
        return ADDRESS

    def _wait_cpus(self, cpus: float) -> None:
        """Wait until the cluster shows ``cpus`` CPUs (asked in a child process, so that this
        process stays free to ``ray.init`` later)."""
        code = ("import ray,sys;ray.init(address=sys.argv[1],log_to_driver=False);"
                "print(ray.cluster_resources().get('CPU',0))")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    self.__exit__()
                    raise RuntimeError(f"ray start exited with {p.returncode}")
            try:
                out = subprocess.run([sys.executable, "-c", code, ADDRESS], capture_output=True, text=True,
                                     timeout=30)
                if out.returncode == 0 and float(out.stdout.split()[-1]) >= cpus:
                    return
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                pass
            time.sleep(1)
        self.__exit__()
        raise TimeoutError(f"the local Ray cluster did not show {cpus} CPUs in {self.timeout} s")

    def __exit__(self, *exc) -> None:
        """Kill every process of the cluster's own sessions at once. ``ray start --block`` would
        stop its node on SIGTERM, but that takes about 30 s even when idle, and Ray's workers run
        in process groups of their own: a session (``start_new_session``) holds exactly what this
        cluster started, and nothing else."""
        sessions = {p.pid for p in self.procs}
        for pid in _processes_in(sessions):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait(timeout=10)
        deadline = time.monotonic() + 10  # until they are gone (their ports free for the next cluster)
        while _processes_in(sessions) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _processes_in(sessions: set[int]) -> list[int]:
    """The processes whose session id is one of ``sessions`` (Linux: field 6 of /proc/PID/stat)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:  # the process has ended meanwhile
            continue
        if int(fields[3]) in sessions and fields[0] != "Z":  # a zombie holds nothing but its pid
            pids.append(int(stat.parent.name))
    return pids
