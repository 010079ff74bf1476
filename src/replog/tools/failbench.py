"""Failover figures, measured: `python -m replog.tools.failbench [--kills 20] [--lease-ttl 5]`.

1. Throughput: single-message POSTs at w=majority through replog's load generator (replog.tools.loadgen,
   a process of its own) against a static cluster (`replog master` + two `replog secondary`) and a
   failover cluster (etcd + three `replog node`s), every node on a data dir in both, in alternating
   rounds within one run; the median of each and their ratio (issue 12's target: >= 0.9).
2. Failover: a failover cluster under writers at w=majority that follow the master (replog.tools.failover.
   Writer); `--kills` times: SIGKILL the master, time until the first write acknowledged by another node,
   restart the killed node on its data dir and let it catch up. p50 and max of those times (the SPEC's
   bound: lease TTL + 2 s, plus the time to copy what the new master lacks), and, after the last kill,
   a check that every acknowledged write is on every node at its seq.

Prints a table; --json FILE writes every figure. Exit status 1 if an acknowledged write was lost or a
failover did not happen within --deadline seconds. The machine's load counts: say what else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .cluster import ClusterError, LocalCluster, wait_until
from .failover import Ack, FailoverCluster, Writer

STALL_TIMEOUT = 30.0


def loadgen(host: str, port: int, *, count: int, clients: int, tag: str, w: int | str = "majority") -> dict[str, Any]:
    """One load of single-message POSTs in a replog.tools.loadgen process; its result plus "rate" (ok/s)."""
    body = '{"message":"' + tag + '%(n)09d","w":' + json.dumps(w) + "}"
    spec = {
        "host": host,
        "port": port,
        "method": "POST",
        "path": "/messages",
        "body": body,
        "count": count,
        "clients": clients,
        "loop": "auto",
        "stall_timeout": STALL_TIMEOUT,
    }
    cmd = [sys.executable, "-m", "replog.tools.loadgen", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    result = None
    try:
        for line in proc.stdout:
            msg = json.loads(line)
            if "ready" in msg:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            elif "result" in msg:
                result = msg["result"]
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if result is None:
        raise ClusterError(f"the load generator failed (exit {proc.returncode})")
    result["rate"] = result["ok"] / result["elapsed_s"] if result["elapsed_s"] > 0 else 0.0
    return result


def throughput(args: argparse.Namespace, workdir: Path, say: Any) -> dict[str, Any]:
    """Alternating rounds, static then failover; each round a fresh cluster and one load."""
    rates: dict[str, list[float]] = {"static": [], "failover": []}
    for r in range(args.rounds):
        for kind in ("static", "failover"):
            where = workdir / f"tp-{kind}-{r}"
            if kind == "static":
                cluster: Any = LocalCluster(2, data_dirs=True, workdir=where, heartbeat_interval=None)
                cluster.start(timeout=60)
                cluster.wait_healthy(60)
                master = cluster.master
            else:
                cluster = FailoverCluster(
                    3, lease_ttl=args.lease_ttl, workdir=where, proxies=False, etcd_fsync=True, cluster="bench"
                )
                cluster.start(timeout=60)
                master = cluster.wait_master(60)
                # Every node registered and caught up before the clock starts, as the static cluster's wait_healthy.
                cluster.wait_converged(60)
            try:
                loadgen(master.host, master.port, count=max(50, args.requests // 10), clients=args.clients, tag="warm")
                result = loadgen(master.host, master.port, count=args.requests, clients=args.clients, tag=f"r{r}")
            finally:
                cluster.cleanup()
            if result["errors"]:
                say(f"  ({kind} round {r + 1}: {result['errors']} errors: {result.get('error_sample')})")
            rates[kind].append(result["rate"])
            say(f"  round {r + 1} {kind:8} {result['rate']:8.0f} writes/s  p50 {result['p50_ms']:.1f} ms")
    static, failover = statistics.median(rates["static"]), statistics.median(rates["failover"])
    return {"static_rates": rates["static"], "failover_rates": rates["failover"], "static": static,
            "failover": failover, "ratio": failover / static if static else 0.0}  # fmt: skip


def kills(args: argparse.Namespace, workdir: Path, say: Any) -> dict[str, Any]:
    fc = FailoverCluster(3, lease_ttl=args.lease_ttl, workdir=workdir / "kills", proxies=False, etcd_fsync=True)
    gaps: list[float] = []
    missed = 0
    writers: list[Writer] = []
    try:
        fc.start(timeout=60)
        fc.wait_master(60)
        writers = [Writer(fc, tag=f"k{i}").start() for i in range(args.writers)]
        for k in range(args.kills):
            master = fc.wait_master(args.deadline)
            # Load on the master before it dies: a few writes it acknowledged itself.
            start = time.monotonic()
            for w in writers:
                w.wait_acks_after(start, 3, args.deadline, by={master.url})
            killed = fc.kill(master)
            others = {n.url for n in fc.nodes if n is not master}

            def first_after(killed: float = killed, others: set[str] = others) -> Ack | None:
                acks = [w.first_ack_after(killed, by=others) for w in writers]
                return min((a for a in acks if a is not None), key=lambda a: a.at, default=None)

            try:
                first = wait_until(
                    first_after, args.deadline, interval=0.01, what="a write acknowledged by a new master"
                )
                gaps.append(first.at - killed)
                say(f"  kill {k + 1:2}: {fc.name(master)} killed; first write acknowledged {gaps[-1]:.2f}s later")
            except ClusterError:
                missed += 1
                say(f"  kill {k + 1:2}: {fc.name(master)} killed; no write acknowledged within {args.deadline:g}s")
            fc.restart(master)
            # Back as a secondary and caught up with the master before the next kill (a majority must survive it).
            current = fc.wait_master(args.deadline)
            target = (fc.health(current) or {}).get("seq", 0)
            wait_until(
                lambda m=master, t=target: (fc.health(m) or {}).get("seq", -1) >= t,
                args.deadline,
                what="the restarted node to catch up",
            )
    finally:
        stats = [w.stop() for w in writers]
    acked = [a for s in stats for a in s.acked]
    lost = -1
    try:
        final = fc.wait_converged(60)
        at = {e["text"]: e["seq"] for e in final}
        lost = sum(1 for a in acked if at.get(a.text) != a.seq)
    finally:
        fc.cleanup()
    return {
        "lease_ttl": args.lease_ttl,
        "kills": args.kills,
        "gaps_s": [round(g, 3) for g in gaps],
        "missed": missed,
        "p50_s": statistics.median(gaps) if gaps else None,
        "max_s": max(gaps) if gaps else None,
        "acked_writes": len(acked),
        "lost_writes": lost,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m replog.tools.failbench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kills", type=int, default=20, help="master kills to time (0: throughput only)")
    parser.add_argument("--lease-ttl", type=int, default=5, help="the nodes' --lease-ttl, whole seconds")
    parser.add_argument("--writers", type=int, default=4, help="writer threads during the kills")
    parser.add_argument("--requests", type=int, default=5000, help="w=majority POSTs per throughput round")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections of the load generator")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds of each kind (0: kills only)")
    parser.add_argument(
        "--deadline", type=float, default=60.0, help="seconds a failover may take before it counts as missed"
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
    }
    with tempfile.TemporaryDirectory(prefix="replog-failbench-") as tmp:
        workdir = Path(tmp)
        if args.rounds:
            say(f"throughput, w=majority, {args.requests} POSTs x {args.rounds} rounds, {args.clients} clients:")
            report["throughput"] = throughput(args, workdir, say)
        if args.kills:
            say(
                f"failover: {args.kills} master kills under {args.writers} writers at w=majority, lease TTL {args.lease_ttl}s:"
            )
            report["failover"] = kills(args, workdir, say)
    report["machine"]["load_after"] = os.getloadavg()
    say("")
    if "throughput" in report:
        t = report["throughput"]
        say(f"w=majority writes/s (median): static {t['static']:.0f}, failover {t['failover']:.0f}, "
            f"ratio {t['ratio']:.2f} (target >= 0.9)")  # fmt: skip
    ok = True
    if "failover" in report:
        f = report["failover"]
        if f["p50_s"] is not None:
            say(f"SIGKILL of the master -> first acknowledged write: p50 {f['p50_s']:.2f}s, max {f['max_s']:.2f}s "
                f"over {len(f['gaps_s'])} kills (target <= lease TTL + 2 s = {args.lease_ttl + 2}s)")  # fmt: skip
        say(f"acknowledged writes {f['acked_writes']}, lost {f['lost_writes']}, failovers missed {f['missed']}")
        ok = f["lost_writes"] == 0 and f["missed"] == 0
    say(f"load average before {report['machine']['load']}, after {report['machine']['load_after']}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
