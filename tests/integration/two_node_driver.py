"""The driver of the two-node test: the stream over actors spread on two nodes, the second node lost midway.

Run as ``python tests/integration/two_node_driver.py --address=127.0.0.1:<port> ...`` against a cluster of a head
and one more node (see :mod:`tests.integration.test_two_node`). It

1. builds the synthetic five-symbol market and its batch-path reference;
2. waits for both nodes, creates the five actors with Ray's ``SPREAD`` strategy and records where each lives;
3. streams the market through :class:`~actors.stream.StreamPipeline`; in the middle of the span where every
   symbol trades it kills the second node's raylet (found among the descendants of that node's ``ray start``
   process), while a thread times how long Ray takes to declare the node dead and to bring its actors back on
   the head;
4. prints one JSON line: placement before and after, the actors' counters and restart flags, the stream's
   acknowledgements and recoveries, whether every symbol's output equals the batch path, and the timings.

Checks are left to the test; the driver fails (non-zero exit, traceback on stderr) only when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from actors.asset import get_or_create_asset_actor
from actors.router import Router
from ingest.asset import FileCheckpointStore
from ingest.records import NS_PER_MINUTE
from ingest.sources.base import RawBatch
from ingest.synthetic import SimulationConfig, simulate
from ingest.validation import ValidationConfig
from tests.integration.test_stream import _batch_path, _clock, _frames, _stream, _windows

#: The five symbols of the market (each actor is a process that takes seconds of CPU to start).
SYMBOLS = ("SPY", "AAPL", "BTC-USD", "ETH-USD", "EURUSD")
#: The resource only the head node has.
HEAD_RESOURCE = "node:__internal_head__"


def _alive_nodes() -> list[dict[str, Any]]:
    """The cluster's live nodes, as :func:`ray.nodes` describes them."""
    return [n for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]


def _wait_for_nodes(count: int, timeout_s: float) -> list[dict[str, Any]]:
    """Wait until ``count`` nodes are alive; returns them.

    Raises
    ------
    TimeoutError
        When fewer are alive after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = _alive_nodes()
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(nodes)} node(s) alive after {timeout_s} s, expected {count}")
        time.sleep(0.2)


def _raylet_of(leader_pid: int) -> psutil.Process:
    """The ``raylet`` process among the descendants of a node's ``ray start`` process.

    Raises
    ------
    LookupError
        When there is none.
    """
    for p in psutil.Process(leader_pid).children(recursive=True):
        if p.name() == "raylet":
            return p
    raise LookupError(f"no raylet among the descendants of process {leader_pid}")


def _kill_point(raws: Sequence[RawBatch], symbols: Sequence[str]) -> int:
    """The raw batch before which the second node is lost: the middle of the span where every symbol trades.

    The stocks trade only in the US session (the UTC afternoon of the synthetic day), so a fixed fraction of
    the stream could strike before some actors hold any state; in the middle of the common span every actor has
    state, checkpoints, and batches still to come.
    """
    present = [
        {str(s) for f in (raw.trades, raw.quotes) if f is not None for s in f["symbol"].unique()} for raw in raws
    ]
    spans = [[k for k, syms in enumerate(present) if sym in syms] for sym in symbols]
    first, last = max(span[0] for span in spans), min(span[-1] for span in spans)
    if last <= first:
        raise ValueError(f"symbols={list(symbols)!r}: no span of the stream where all of them trade")
    return (first + last) // 2


def _pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class RecoveryClock:
    """Times a node's loss from the moment its raylet is killed, in a background thread.

    Parameters
    ----------
    node_id : str
        The node lost.
    head_id : str
        Where its actors should come back.
    handles : dict
        The handles of the actors that lived on the lost node, by symbol.
    timeout_s : float
        How long to watch at most.
    """

    def __init__(self, node_id: str, head_id: str, handles: dict[str, Any], timeout_s: float = 90.0) -> None:
        self.node_id, self.head_id, self.handles, self.timeout_s = node_id, head_id, handles, timeout_s
        self.started = 0.0
        #: seconds from the kill until Ray declared the node dead
        self.node_dead_s: float | None = None
        #: seconds from the kill until each actor answered from the head
        self.back_s: dict[str, float] = {}
        self._thread = threading.Thread(target=self._watch, name="recovery-clock", daemon=True)

    def start(self) -> None:
        """Start timing (call right after the kill)."""
        self.started = time.monotonic()
        self._thread.start()

    def join(self) -> None:
        """Wait for the watch to end."""
        if self._thread.is_alive():
            self._thread.join(self.timeout_s)

    def _watch(self) -> None:
        deadline = self.started + self.timeout_s
        while time.monotonic() < deadline and self.node_dead_s is None:
            if not any(n["NodeID"] == self.node_id for n in _alive_nodes()):
                self.node_dead_s = time.monotonic() - self.started
            else:
                time.sleep(0.1)
        for sym, handle in self.handles.items():
            while time.monotonic() < deadline:
                try:
                    where = ray.get(handle.where.remote(), timeout=2.0)
                except (RayActorError, GetTimeoutError):
                    time.sleep(0.1)
                    continue
                if where["node_id"] == self.head_id:
                    self.back_s[sym] = time.monotonic() - self.started
                    break
                time.sleep(0.1)


def run(namespace: str, checkpoints: Path, second_node_pid: int, window_minutes: int) -> dict[str, Any]:
    """The stream on the connected cluster, the second node lost midway; returns what was observed.

    Parameters
    ----------
    namespace : str
        Ray namespace of the actors.
    checkpoints : Path
        Directory of the actors' checkpoints (shared by both nodes: they run on one machine).
    second_node_pid : int
        The second node's ``ray start --block`` process.
    window_minutes : int
        Minutes of market per raw batch.

    Returns
    -------
    dict
        The JSON-friendly facts the test checks (see the keys below), with the timings in seconds.
    """
    t0 = time.monotonic()
    market = simulate(SimulationConfig(seed=4, assets=SYMBOLS, activity=0.3))
    raws = _windows(*_frames(market.trades, market.quotes), window_ns=window_minutes * NS_PER_MINUTE)
    universe = frozenset(market.trades.symbol.tolist()) | frozenset(market.quotes.symbol.tolist())
    config, clock = ValidationConfig(universe=universe), _clock(raws)
    expected = _batch_path(raws, config, clock)
    symbols = sorted(s for s in expected if not s.startswith("_"))

    nodes = _wait_for_nodes(2, timeout_s=30.0)
    head_id = next(n["NodeID"] for n in nodes if HEAD_RESOURCE in n["Resources"])
    second_id = next(n["NodeID"] for n in nodes if n["NodeID"] != head_id)
    driver_node = ray.get_runtime_context().get_node_id()
    raylet = _raylet_of(second_node_pid)

    actor_for = partial(
        get_or_create_asset_actor,
        checkpoints=FileCheckpointStore(checkpoints),
        checkpoint_every=2,
        checkpoint_every_s=60.0,
        gap_timeout_s=1.0,
        namespace=namespace,
        spread=True,
    )
    # every actor up before the stream, so that the placement is known (the router finds them by name)
    handles: dict[str, Any] = {sym: actor_for(sym) for sym in symbols}
    where_before = dict(zip(symbols, ray.get([handles[s].where.remote() for s in symbols], timeout=120), strict=True))
    moved = sorted(s for s in symbols if where_before[s]["node_id"] == second_id)
    timer = RecoveryClock(second_id, head_id, {s: handles[s] for s in moved})
    kill_at = _kill_point(raws, symbols)
    t_ready = time.monotonic()

    def strike(k: int) -> None:
        if k == kill_at:
            raylet.kill()
            timer.start()

    router = Router(actor_for, keep_outputs=True, recover_timeout_s=90.0)
    status = _stream(raws, router, config, clock, before_offer=strike)
    t_done = time.monotonic()
    timer.join()

    where_after = dict(zip(symbols, ray.get([handles[s].where.remote() for s in symbols], timeout=60), strict=True))
    counters = dict(zip(symbols, ray.get([handles[s].counters.remote() for s in symbols], timeout=60), strict=True))
    positions = dict(zip(symbols, ray.get([handles[s].position.remote() for s in symbols], timeout=60), strict=True))
    return {
        "head_node": head_id,
        "second_node": second_id,
        "driver_node": driver_node,
        "placement_before": {s: where_before[s]["node_id"] for s in symbols},
        "placement_after": {s: where_after[s]["node_id"] for s in symbols},
        "pids_before": {s: where_before[s]["pid"] for s in symbols},
        "pids_after": {s: where_after[s]["pid"] for s in symbols},
        "old_pid_running": {s: _pid_running(int(where_before[s]["pid"])) for s in symbols},
        "moved": moved,
        "killed_raylet_pid": raylet.pid,
        "alive_nodes_after": sorted(n["NodeID"] for n in _alive_nodes()),
        "restarted": {s: positions[s].restarted for s in symbols},
        "restored": {s: positions[s].restored for s in symbols},
        "counted": {s: int(counters[s]["ticks"]) + int(counters[s]["quotes"]) for s in symbols},
        "expected_records": {s: expected[s].records for s in symbols},
        "outputs_equal": {s: router.outputs(s).equals(expected[s]) for s in symbols},
        "router_recoveries": {s: router.recoveries(s) for s in symbols},
        "recoveries": status.recoveries,
        "resent": router.stats.resent,
        "duplicates": router.stats.duplicates,
        "entries_appended": status.entries_appended,
        "entries_acked": status.entries_acked,
        "batches": len(raws),
        "batches_after_kill": len(raws) - kill_at,
        "node_dead_s": timer.node_dead_s,
        "actors_back_s": timer.back_s,
        "setup_s": t_ready - t0,
        "stream_s": t_done - t_ready,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, connect to the cluster, run, print the JSON line; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the head's GCS, 127.0.0.1:<port>")
    parser.add_argument("--namespace", required=True, help="Ray namespace of the actors")
    parser.add_argument("--checkpoints", required=True, type=Path, help="directory of the actors' checkpoints")
    parser.add_argument("--second-node-pid", required=True, type=int, help="the second node's ray start process")
    parser.add_argument("--window-minutes", type=int, default=5, help="minutes of market per raw batch")
    args = parser.parse_args(argv)
    ray.init(address=args.address, namespace=args.namespace, log_to_driver=False)
    try:
        result = run(args.namespace, args.checkpoints, args.second_node_pid, args.window_minutes)
    finally:
        ray.shutdown()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
