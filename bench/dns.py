#!/usr/bin/env python3
"""DNS over TCP side by side, in one run: one nsd directly; dnsdist (one TCP worker thread)
over three nsd; Switchyard (one worker) over the same three, with the built-in `dns`
protocol and with a plain `length_field` listener (by_id, the ids rewritten).

Per round and target, two dnsperf runs over TCP (`-m tcp`, 8 connections, 100 queries
outstanding): one as fast as it goes (queries/s, and the proxy's CPU time per query, from
/proc/PID/stat, all threads), and one at a fixed offered rate (`--rate`, the same for every
target) with every query's latency printed (`-v`), for p50 and p99 at equal load. Rounds are
interleaved (each target once per round, so the shared box's drift hits all alike); the last
table gives each Switchyard target against dnsdist, round by round, as medians. Everything
on 127.0.0.1; every run bounded by its time (`-l`).

    python3 bench/dns.py [--seconds 10] [--rate 20000] [--rounds 3] [--baseline OLD_BINARY]

Needs nsd, dnsperf and dnsdist (Debian) and target/release/switchyard (cargo build
--release).
"""
import argparse, os, re, statistics, subprocess, sys

from loopback import Procs, cpu_seconds, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWITCHYARD = os.path.join(ROOT, "target", "release", "switchyard")
NAMES = 1000


def nsd(procs, i):
    """One nsd (one server process) on a free port, serving example.test."""
    port = free_port()
    d = os.path.join(procs.tmp, f"nsd{i}")
    os.makedirs(d)
    zone = "$ORIGIN example.test.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"
    zone += "".join(f"n{k} IN A 10.{k // 65536 % 256}.{k // 256 % 256}.{k % 256}\n" for k in range(NAMES))
    with open(os.path.join(d, "example.zone"), "w") as f:
        f.write(zone)
    conf = f"""server:
  ip-address: 127.0.0.1@{port}
  username: ""
  chroot: ""
  zonesdir: "{d}"
  database: ""
  pidfile: "{d}/nsd.pid"
  xfrdfile: "{d}/xfrd.state"
  zonelistfile: "{d}/zone.list"
  logfile: "{d}/nsd.log"
  server-count: 1
  tcp-count: 1000
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: example.test
  zonefile: example.zone
"""
    path = os.path.join(d, "nsd.conf")
    with open(path, "w") as f:
        f.write(conf)
    nsd_bin = "/usr/sbin/nsd" if os.path.exists("/usr/sbin/nsd") else "nsd"
    procs.start([nsd_bin, "-d", "-c", path], port, "nsd")
    return port


def start_targets(procs):
    direct = nsd(procs, 0)
    pool = [nsd(procs, i) for i in (1, 2, 3)]
    names = [f"ns{i + 1}" for i in range(3)]
    # dnsdist: one TCP worker thread, least outstanding, no cache, no console.
    dd_port = free_port()
    servers = "".join(f'newServer({{address="127.0.0.1:{p}", name="{n}"}})\n' for p, n in zip(pool, names))
    dd_conf = procs.file("dnsdist.conf", f"""setLocal("127.0.0.1:{dd_port}")
setMaxTCPClientThreads(1)
setSecurityPollSuffix("")
{servers}setServerPolicy(leastOutstanding)
""")
    dnsdist = subprocess.run(["which", "dnsdist"], capture_output=True, text=True).stdout.strip() or "/usr/bin/dnsdist"
    dd = procs.start([dnsdist, "--supervised", "--disable-syslog", "-C", dd_conf], dd_port, "dnsdist")
    backends = ", ".join(f'{{ address = "127.0.0.1:{p}", name = "{n}" }}' for p, n in zip(pool, names))

    def switchyard(binary, name, codec):
        port = free_port()
        toml = procs.file(f"{name}.toml", f"""workers = 1
[[listener]]
name = "dns"
listen = "127.0.0.1:{port}"
cluster = "dns"
correlation = "by_id"
{codec}
[[cluster]]
name = "dns"
policy = "least_outstanding"
backends = [{backends}]
pool = {{ connections_per_backend = 1 }}
""")
        p = procs.start([binary, "run", "--config", toml, "--log", "warn"], port, name)
        return (name, port, p.pid)

    dns_codec = '[listener.codec]\nkind = "dns"\n'
    lf_codec = 'retry_on_backend_close = true\nerror_reply_hex = "0000 {id} 8182 0000 0000 0000 0000"\n[listener.codec]\nkind = "length_field"\nlength_width = 2\nid = { offset = 2, width = 2 }\n'
    targets = [("direct (1 nsd)", direct, None), ("dnsdist (3 nsd)", dd_port, dd.pid),
               switchyard(SWITCHYARD, "switchyard dns (3 nsd)", dns_codec),
               switchyard(SWITCHYARD, "switchyard length_field (3 nsd)", lf_codec)]
    if BASELINE:
        targets.append(switchyard(BASELINE, "baseline length_field (3 nsd)",
                                  lf_codec.replace("retry_on_backend_close = true\n", "")))
    return targets


def dnsperf(port, seconds, rate=None):
    args = ["dnsperf", "-m", "tcp", "-s", "127.0.0.1", "-p", str(port), "-d", DATA, "-c", "8", "-q", "100",
            "-l", str(seconds)]
    if rate:
        args += ["-Q", str(rate), "-v"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    done = re.search(r"Queries completed:\s+(\d+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if not (qps and done and lost):
        sys.exit(f"no result from dnsperf on {port}: {out[-800:]}")
    lat = sorted(float(m) for m in re.findall(r"^> \S+ \S+ \S+ ([\d.]+)$", out, re.M))
    return float(qps.group(1)), int(done.group(1)), int(lost.group(1)), lat


def quantile(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3 if xs else float("nan")


def main():
    global BASELINE, DATA
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", help="an older switchyard binary, run with a length_field listener")
    args = ap.parse_args()
    BASELINE = args.baseline
    procs = Procs("sy-dns-bench-")
    DATA = procs.file("queries.txt", "".join(f"n{k}.example.test A\n" for k in range(NAMES)))
    runs = {}
    try:
        targets = start_targets(procs)
        for r in range(args.rounds):
            for name, port, pid in targets:
                cpu0 = cpu_seconds(pid) if pid else 0
                qps, done, lost, _ = dnsperf(port, args.seconds)
                cpu = (cpu_seconds(pid) - cpu0) / done * 1e6 if pid and done else None
                _, done2, lost2, lat = dnsperf(port, max(3, args.seconds // 2), args.rate)
                row = (qps, cpu, quantile(lat, 0.5), quantile(lat, 0.99), lost + lost2)
                runs.setdefault(name, []).append(row)
                print(f"round {r + 1} {name:34} {qps:9.0f} q/s  " +
                      (f"cpu {cpu:6.2f} µs/q  " if cpu is not None else "cpu    –       ") +
                      f"at {args.rate} q/s: p50 {row[2]:.3f} ms p99 {row[3]:.3f} ms  lost {lost + lost2}", flush=True)
    finally:
        procs.stop()
    print(f"\n| target | queries/s (median) | proxy CPU µs/query | p50 ms at {args.rate} q/s | p99 ms at {args.rate} q/s | lost |")
    print("|---|---|---|---|---|---|")
    for name, rows in runs.items():
        med = lambda i: statistics.median(x[i] for x in rows)
        cpu = f"{med(1):.2f}" if rows[0][1] is not None else "–"
        print(f"| {name} | {med(0):.0f} | {cpu} | {med(2):.3f} | {med(3):.3f} | {sum(x[4] for x in rows)} |")
    dd = runs["dnsdist (3 nsd)"]
    print("\n| target against dnsdist (round by round, median) | queries/s ratio | CPU/query ratio | p99 ratio |")
    print("|---|---|---|---|")
    for name, rows in runs.items():
        if not name.startswith(("switchyard", "baseline")):
            continue
        ratio = lambda i: statistics.median(a[i] / b[i] for a, b in zip(rows, dd))
        print(f"| {name} | {ratio(0):.2f} | {ratio(1):.2f} | {ratio(3):.2f} |")


BASELINE = None
DATA = None
if __name__ == "__main__":
    main()
