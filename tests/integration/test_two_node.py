"""Two Ray nodes on one machine: actors spread over both, and losing the second node loses nothing.

A head and a second node are started with ``ray start --block`` (each in its own session, on free ports, with
token authentication and a fast health check so that a dead node is noticed within seconds). The stream then
runs in a separate driver process (:mod:`tests.integration.two_node_driver`; the test session holds a local
Ray of its own), which spreads the per-symbol actors over both nodes, kills the second node's raylet midway
through the stream, and reports what it saw as one JSON line: the actors that lived on the second node
come back on the head from their checkpoints, and the stream still equals the batch path exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("two_node_driver.py")
RAY = str(Path(sys.executable).with_name("ray"))
#: A node missing three health checks a second apart is declared dead (the defaults take about half a minute).
SYSTEM_CONFIG = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 3,
}
#: Object store of each node, in bytes (the micro-batches are small).
OBJECT_STORE_BYTES = 150_000_000
#: Seconds a node's processes get to exit after SIGTERM before they are killed.
STOP_TIMEOUT_S = 15.0
#: Seconds a node may take to start (the machine may be busy).
NODE_START_TIMEOUT_S = 60.0
#: What ``ray start`` prints once the node runs.
STARTED = "Ray runtime started."
#: Seconds the driver may take: actor start on both nodes, the stream, the recovery.
DRIVER_TIMEOUT_S = 150.0


def _free_port() -> int:
    """A TCP port of the loopback interface that is free now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _running(p: psutil.Process) -> bool:
    """Whether ``p`` still runs (a zombie, waiting to be reaped, does not)."""
    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _ray_env() -> dict[str, str]:
    """The environment of every process of the cluster: token authentication, the project importable.

    Every process reads the same token file (``~/.ray/auth_token``, created on first use); ``RAY_ADDRESS`` of
    the test session, if any, is dropped so that each process connects where its arguments say.
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _node_ports() -> list[str]:
    """``ray start`` options giving every port of one node a free one (workers take random ports)."""
    return [
        f"--node-manager-port={_free_port()}",
        f"--object-manager-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-agent-grpc-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}",
        f"--metrics-export-port={_free_port()}",
        "--min-worker-port=0",
        "--max-worker-port=0",
    ]


@dataclass
class RayNode:
    """One node: its ``ray start --block`` process (leader of its own session) and that process's log.

    Parameters
    ----------
    name : str
        ``head`` or ``second``.
    process : subprocess.Popen
        The ``ray start --block`` process.
    log : Path
        Its standard output and error.
    """

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def processes(self) -> list[psutil.Process]:
        """Every live process of the node: the leader's descendants and whatever else runs in its session.

        A process whose parent died (a worker of a killed raylet) is no longer a descendant of the leader, but
        it stays in the leader's session.
        """
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            leader = psutil.Process(self.process.pid)
            found[leader.pid] = leader
            found.update((p.pid, p) for p in leader.children(recursive=True))
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if p.pid not in found and os.getsid(p.pid) == self.process.pid:
                    found[p.pid] = p
        return [p for p in found.values() if p.pid != os.getpid()]

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every process of the node: SIGTERM, then SIGKILL to what is left after ``timeout_s`` seconds.

        The SIGTERM goes to the leader first (``ray start --block`` then stops the processes it started, in
        order); whatever is still running halfway through the timeout gets a SIGTERM of its own.
        """
        procs = self.processes()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=timeout_s / 2)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(alive, timeout=timeout_s / 2)
        for p in [*alive, *self.processes()]:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(self.processes(), timeout=5.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5.0)

    def tail(self, chars: int = 3000) -> str:
        """The end of the node's log, for failure messages."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"<{self.log}: {exc}>"


@dataclass
class TwoNodeCluster:
    """A running head and second node; ``address`` is the head's GCS (``127.0.0.1:<port>``)."""

    address: str
    temp_dir: Path
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def head(self) -> RayNode:
        """The head node."""
        return self.nodes[0]

    @property
    def second(self) -> RayNode:
        """The node joined with ``ray start --address``."""
        return self.nodes[1]

    def logs(self) -> str:
        """The ends of both nodes' logs."""
        return "\n".join(f"--- {n.name} node log:\n{n.tail()}" for n in self.nodes)


def _start_node(name: str, args: list[str], temp_dir: Path) -> RayNode:
    """``ray start <args> --block`` in a new session, its output to ``<temp_dir>/<name>.log``."""
    log = temp_dir / f"{name}.log"
    node_dir = temp_dir / name
    node_dir.mkdir()
    cmd = [
        RAY,
        "start",
        *args,
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--temp-dir={node_dir}",
        "--disable-usage-stats",
        "--block",
        *_node_ports(),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_ray_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return RayNode(name, process, log)


def _wait_started(node: RayNode, timeout_s: float = NODE_START_TIMEOUT_S) -> None:
    """Wait until the node's ``ray start`` reports the runtime started; fail early when it exits.

    A node joining a head that is still starting may ask its GCS for the cluster's configuration too early, and
    its raylet dies; so the second node is started only once the head is up.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if STARTED in node.tail(chars=1_000_000):
            return
        if node.process.poll() is not None:
            pytest.fail(f"the {node.name} node exited with {node.process.returncode}:\n{node.tail()}")
        time.sleep(0.2)
    pytest.fail(f"the {node.name} node did not start within {timeout_s} s:\n{node.tail()}")


@contextlib.contextmanager
def two_node_cluster() -> Iterator[TwoNodeCluster]:
    """A head and a second node of one Ray cluster on this machine, both stopped (and their files removed) after.

    Each node has one CPU and its own temporary directory (short: Unix socket paths are limited in length).
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="ray2n-"))
    port = _free_port()
    cluster = TwoNodeCluster(f"127.0.0.1:{port}", temp_dir)
    try:
        head = _start_node(
            "head",
            [
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={_free_port()}",
                f"--system-config={json.dumps(SYSTEM_CONFIG)}",
            ],
            temp_dir,
        )
        cluster.nodes.append(head)
        _wait_started(head)
        cluster.nodes.append(_start_node("second", [f"--address={cluster.address}"], temp_dir))
        _wait_started(cluster.second)
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            node.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _run_driver(cluster: TwoNodeCluster, checkpoints: Path) -> dict[str, Any]:
    """Run the driver against ``cluster``; returns the JSON line it prints last."""
    cmd = [
        sys.executable,
        str(DRIVER),
        f"--address={cluster.address}",
        f"--namespace=two-node-{uuid.uuid4().hex[:8]}",
        f"--checkpoints={checkpoints}",
        f"--second-node-pid={cluster.second.process.pid}",
    ]
    try:
        done = subprocess.run(
            cmd,
            cwd=ROOT,
            env=_ray_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DRIVER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        err = (exc.stderr or b"").decode(errors="replace")[-4000:]
        pytest.fail(f"the driver did not finish within {DRIVER_TIMEOUT_S} s:\n{err}\n{cluster.logs()}")
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert done.returncode == 0, (
        f"driver exited with {done.returncode}:\n{out[-2000:]}\n{err[-6000:]}\n{cluster.logs()}"
    )
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"the driver printed no result:\n{out[-2000:]}\n{err[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ------------------------------------------------------------------------------------------------------------
def test_second_node_lost_mid_stream_moves_its_actors_to_the_head_and_loses_nothing(tmp_path):
    with two_node_cluster() as cluster:
        r = _run_driver(cluster, tmp_path / "checkpoints")
        # the second node's ray start stops its remaining processes once it sees its raylet gone
        _, leftovers = psutil.wait_procs(cluster.second.processes(), timeout=10.0)
    # and both nodes are stopped, nothing of theirs left running
    assert not [p for node in cluster.nodes for p in node.processes() if _running(p)]
    head_id, second_id = r["head_node"], r["second_node"]
    assert head_id != second_id
    assert r["driver_node"] == head_id
    # spread: actors on both nodes before the loss
    before = r["placement_before"]
    symbols = sorted(before)
    assert len(symbols) == 5
    assert set(before.values()) == {head_id, second_id}, before
    moved = sorted(s for s in symbols if before[s] == second_id)
    assert moved == r["moved"]
    # the second node is gone, its processes with it; its actors run on the head in new processes
    assert r["killed_raylet_pid"] > 0
    assert r["alive_nodes_after"] == [head_id]
    assert not [p for p in leftovers if _running(p)], leftovers
    after = r["placement_after"]
    for sym in symbols:
        assert after[sym] == head_id, sym
        assert r["restarted"][sym] == (sym in moved), sym
        if sym in moved:
            assert r["pids_after"][sym] != r["pids_before"][sym], sym
            assert not r["old_pid_running"][sym], sym
        else:
            # the head's actors never noticed: same process, no recovery
            assert r["pids_after"][sym] == r["pids_before"][sym], sym
            assert r["router_recoveries"][sym] == 0, sym
    # the moved actors came back from their checkpoints (those trading since the start have saved some by then)
    assert any(r["restored"][sym] >= 0 for sym in moved), r["restored"]
    # nothing lost, nothing counted twice: the stream equals the batch path, every record counted once
    assert r["outputs_equal"] == dict.fromkeys(symbols, True)
    for sym in symbols:
        assert r["counted"][sym] == r["expected_records"][sym] > 0, sym
    assert r["entries_acked"] == r["entries_appended"] > 0
    assert r["recoveries"] >= 1
    assert r["batches_after_kill"] >= 10
