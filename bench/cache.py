#!/usr/bin/env python3
"""Redis and memcached side by side, in one run: one server directly, Switchyard over three
servers, and twemproxy (nutcracker) over the same three.

Redis: redis-benchmark, 50 clients, GET and SET, pipeline 1 and 16. memcached: memaslap,
50 concurrent clients, its default get/set mix. For each proxy, its CPU time (user+system,
from /proc/PID/stat) over the same run, per million operations. Rounds are interleaved
(each target once per round, so the shared box's drift hits all alike); the last table gives
Switchyard/twemproxy per round, as medians. Everything on 127.0.0.1; every run bounded by a
request count or a time.

    python3 bench/cache.py [--requests 200000] [--rounds 3] [--memcached-seconds 10]
                           [--baseline OLD_BINARY] [--only redis|memcached]

With --baseline, a second Switchyard (an older build) runs over the same three servers as a
fourth target in the same interleaved rounds, and a last table gives this build against it,
round by round: the before/after comparison of a change.

Needs redis-server, redis-tools, memcached, libmemcached-tools and nutcracker (Debian), and
target/release/switchyard (cargo build --release).
"""
import argparse, os, re, statistics, subprocess, sys

from loopback import Procs, cpu_seconds, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWITCHYARD = os.path.join(ROOT, "target", "release", "switchyard")


def start_targets(procs, proto):
    """Starts 4 servers (one for direct use, three behind the proxies) and both proxies."""
    servers = []
    for _ in range(4):
        port = free_port()
        if proto == "redis":
            procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], port, "redis-server")
        else:
            procs.start(["memcached", "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-u", "root", "-m", "256", "-t", "1"], port, "memcached")
        servers.append(port)
    direct, pool = servers[0], servers[1:]
    names = [f"s{i + 1}" for i in range(3)]
    # twemproxy: ketama over the three, fnv1a_64, one thread (it has only one).
    tw_port = free_port()
    yml = procs.file(f"nutcracker-{proto}.yml", f"""pool:
  listen: 127.0.0.1:{tw_port}
  hash: fnv1a_64
  distribution: ketama
  redis: {"true" if proto == "redis" else "false"}
  auto_eject_hosts: false
  server_connections: 1
  servers:
""" + "".join(f"   - 127.0.0.1:{p}:1 {n}\n" for p, n in zip(pool, names)))
    nutcracker = subprocess.run(["which", "nutcracker"], capture_output=True, text=True).stdout.strip() or "/usr/sbin/nutcracker"
    tw = procs.start([nutcracker, "-c", yml, "-s", str(free_port())], tw_port, "nutcracker")
    # Switchyard: one worker, the same servers, names and placement (ketama).
    sy_port = free_port()
    codec = "resp" if proto == "redis" else "memcache"
    backends = ", ".join(f'{{ address = "127.0.0.1:{p}", name = "{n}" }}' for p, n in zip(pool, names))
    toml = procs.file(f"switchyard-{proto}.toml", f"""workers = 1
[[listener]]
name = "{proto}"
listen = "127.0.0.1:{sy_port}"
cluster = "{proto}"
[listener.codec]
kind = "{codec}"
[[cluster]]
name = "{proto}"
policy = "{POLICY}"
backends = [{backends}]
pool = {{ connections_per_backend = 1 }}
""")
    sy = procs.start([SWITCHYARD, "run", "--config", toml, "--log", "warn"], sy_port, "switchyard")
    targets = [("direct (1 server)", direct, None), ("switchyard (3 servers)", sy_port, sy.pid), ("twemproxy (3 servers)", tw_port, tw.pid)]
    if BASELINE:
        base_port = free_port()
        base_toml = procs.file(f"baseline-{proto}.toml", open(toml).read().replace(f"127.0.0.1:{sy_port}", f"127.0.0.1:{base_port}"))
        base = procs.start([BASELINE, "run", "--config", base_toml, "--log", "warn"], base_port, "baseline switchyard")
        targets.append(("baseline (3 servers)", base_port, base.pid))
    return targets


def redis_run(port, test, pipeline, requests):
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50", "-n", str(requests), "-P", str(pipeline),
         "-t", test, "-r", "100000", "--csv"],
        capture_output=True, text=True, timeout=600).stdout
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells and cells[0].upper().startswith(test.upper()):
            # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
            return float(cells[1]), float(cells[4]), float(cells[6])
    sys.exit(f"no result from redis-benchmark on {port}: {out}")


def memaslap_run(port, seconds):
    out = subprocess.run(
        ["memcaslap", "-s", f"127.0.0.1:{port}", "-T", "1", "-c", "50", "-t", f"{seconds}s", "-X", "64", "-S", f"{seconds}s"],
        capture_output=True, text=True, timeout=seconds + 60).stdout
    tps = re.search(r"Run time: [\d.]+s Ops: \d+ TPS: (\d+)", out)
    if not tps:
        sys.exit(f"no result from memcaslap on {port}: {out[-500:]}")
    # Latency: the "Total Statistics (N events)" block's log2 histogram of microseconds:
    # a row "e: a b c d" counts values in [2^e, 2^(e+1)), [2^(e+1), 2^(e+2)), …
    total = out.split("Total Statistics (")[-1].split("Log2 Dist:")[-1]
    buckets = []
    for label, counts in re.findall(r"^\s*(\d+):((?:\s+\d+)+)\s*$", total, re.M):
        for i, n in enumerate(counts.split()):
            buckets.append((2 ** (int(label) + i + 1), int(n)))
    def quantile(q):
        count = sum(n for _, n in buckets)
        seen = 0
        for upper, n in buckets:
            seen += n
            if count and seen >= q * count:
                return upper / 1000.0  # the bucket's upper bound, in ms
        return float("nan")
    return float(tps.group(1)), quantile(0.5), quantile(0.99)


def measure(pid, run):
    """Runs `run()` -> (ops, rps, p50, p99) and returns (rps, p50, p99, proxy CPU s per 1M ops)."""
    cpu0 = cpu_seconds(pid) if pid else 0
    ops, rps, p50, p99 = run()
    cpu = (cpu_seconds(pid) - cpu0) if pid else None
    return (rps, p50, p99, cpu / ops * 1e6 if cpu is not None and ops else None)


def interleaved(targets, rounds, run_on):
    """Round after round, each target once per round (so the box's drift hits all alike)."""
    runs = {name: [] for name, _, _ in targets}
    for _ in range(rounds):
        for name, port, pid in targets:
            runs[name].append(measure(pid, lambda: run_on(port)))
    return runs


def main():
    global POLICY
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memcached-seconds", type=int, default=10)
    ap.add_argument("--policy", default="ketama")
    ap.add_argument("--baseline", help="an older switchyard binary to compare against")
    ap.add_argument("--only", choices=["redis", "memcached"], help="run one protocol's rows only")
    args = ap.parse_args()
    POLICY = args.policy
    global BASELINE
    BASELINE = args.baseline
    rows = []
    procs = Procs()
    try:
        targets = start_targets(procs, "redis") if args.only != "memcached" else []
        for test in ("set", "get") if targets else ():
            for pipeline in (1, 16):
                def run_on(port):
                    rps, p50, p99 = redis_run(port, test, pipeline, args.requests)
                    return args.requests, rps, p50, p99
                runs = interleaved(targets, args.rounds, run_on)
                for name, _, _ in targets:
                    rows.append(("redis", f"{test.upper()} -P {pipeline}", name, runs[name]))
                    print_row(rows[-1])
        procs.stop()
        procs = Procs()
        targets = start_targets(procs, "memcached") if args.only != "redis" else []
        def run_mc(port):
            tps, p50, p99 = memaslap_run(port, args.memcached_seconds)
            return tps * args.memcached_seconds, tps, p50, p99
        runs = interleaved(targets, args.rounds, run_mc)
        for name, _, _ in targets:
            rows.append(("memcached", "memaslap get/set", name, runs[name]))
            print_row(rows[-1])
    finally:
        procs.stop()
    print("\n| protocol | load | target | ops/s (median) | p50 ms | p99 ms | proxy CPU s per 1M ops |")
    print("|---|---|---|---|---|---|---|")
    for proto, load, name, runs in rows:
        med = lambda i: statistics.median(r[i] for r in runs)
        cpu = [r[3] for r in runs if r[3] is not None]
        print(f"| {proto} | {load} | {name} | {med(0):.0f} | {med(1):.3f} | {med(2):.3f} | {statistics.median(cpu):.2f} |" if cpu else
              f"| {proto} | {load} | {name} | {med(0):.0f} | {med(1):.3f} | {med(2):.3f} | – |")
    # Switchyard against twemproxy, round by round (same round = same moment of the box).
    print("\n| protocol | load | ops/s ratio | p99 ratio | CPU/op ratio | rounds with p99 no worse |")
    print("|---|---|---|---|---|---|")
    by_load = {}
    for proto, load, name, runs in rows:
        by_load.setdefault((proto, load), {})[name.split()[0]] = runs
    for (proto, load), t in by_load.items():
        sy, tw = t["switchyard"], t["twemproxy"]
        ratio = lambda i: statistics.median(a[i] / b[i] for a, b in zip(sy, tw))
        better = sum(1 for a, b in zip(sy, tw) if a[2] <= b[2])
        print(f"| {proto} | {load} | {ratio(0):.2f} | {ratio(2):.2f} | {ratio(3):.2f} | {better} of {len(sy)} |")
    if BASELINE:
        # This build against the baseline, round by round.
        print("\n| protocol | load | ops/s new/old | p99 new/old | CPU/op new/old |")
        print("|---|---|---|---|---|")
        for (proto, load), t in by_load.items():
            sy, old = t["switchyard"], t["baseline"]
            ratio = lambda i: statistics.median(a[i] / b[i] for a, b in zip(sy, old))
            print(f"| {proto} | {load} | {ratio(0):.2f} | {ratio(2):.2f} | {ratio(3):.2f} |")


def print_row(row):
    proto, load, name, runs = row
    parts = [f"{r[0]:.0f} ops/s p50 {r[1]:.3f} p99 {r[2]:.3f}" + (f" cpu {r[3]:.2f}s/M" if r[3] is not None else "") for r in runs]
    print(f"{proto:9} {load:18} {name:24} " + " | ".join(parts), flush=True)


POLICY = "ketama"
BASELINE = None
if __name__ == "__main__":
    main()
