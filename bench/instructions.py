#!/usr/bin/env python3
"""User-space instructions per message of the proxy's worker thread, counted by callgrind:
a figure that the shared box's load does not move, for comparing two builds of a code path
whose wall-clock difference is inside the box's noise.

Each binary runs `switchyard run` under `valgrind --tool=callgrind --separate-threads=yes`
(one worker) in front of three `switchyard backend` processes; 8 client connections (32 in
flight each) send a fixed number of demo-protocol messages and read every answer; SIGTERM
ends the proxy and callgrind writes the worker's count. Each build runs twice, with a small
and a large count; the difference over the difference in messages is the cost per message,
without start-up and shutdown. Counts are exact for a given interleaving of reads; two runs
of one build agree within about 1%.

    python3 bench/instructions.py --bin A [--bin B ...] [--mode bench|byid|byid-shared|resp]
                                  [--small 40000] [--large 200000] [--listener-extra LINES]

Modes: `bench` is `switchyard bench`'s listener (`in_order`, round_robin, no pins); `byid`
is `by_id` with least_outstanding and pins, each connection its own key; `byid-shared`
the same with all connections sending the same 997 keys (push ownership changes hands);
`resp` is Redis (`resp`, ketama) in front of three redis-servers, each connection sending
pipelined GETs of 1 000 keys. `--listener-extra` adds lines to the listener's table (such as
`retry_on_backend_close = false`), for the cost of a setting within one build.

    python3 bench/instructions.py --cpu [--rounds 3] [--depth 4] --bin A --bin B ...

`--cpu` runs the proxy without valgrind and reports, per binary, the median over the
rounds (binaries alternated) of its user and system CPU time per message during the
clients' run (from /proc/PID/stat): the kernel's share that callgrind does not see, such as
a system call per read.
Needs valgrind (Debian), python3 and, for `resp`, redis-server; everything on 127.0.0.1,
every run bounded by its count.
"""
import argparse, glob, os, signal, socket, statistics, struct, subprocess, sys, tempfile, threading, time

from loopback import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWITCHYARD = os.path.join(ROOT, "target", "release", "switchyard")
CONNS, DEPTH, PAYLOAD = 8, 32, b"x" * 48
EXTRA = ""


def config(mode, listen, backends):
    if mode == "resp":
        listed = ", ".join(f'{{ address = "127.0.0.1:{p}", name = "r{i}" }}' for i, p in enumerate(backends))
        return (
            f'workers = 1\nshutdown_timeout = "2s"\n\n[[listener]]\nname = "ir"\nlisten = "127.0.0.1:{listen}"\n'
            f'cluster = "ir"\n{EXTRA}[listener.codec]\nkind = "resp"\n\n'
            f'[[cluster]]\nname = "ir"\npolicy = "ketama"\nbackends = [{listed}]\n'
        )
    correlation, policy, pins = {
        "bench": ("in_order", "round_robin", ""),
        "byid": ("by_id", "least_outstanding", '[cluster.persistence]\nttl = "10m"\n'),
        "byid-shared": ("by_id", "least_outstanding", '[cluster.persistence]\nttl = "10m"\n'),
    }[mode]
    listed = ", ".join(f'{{ address = "127.0.0.1:{p}", name = "b{i}" }}' for i, p in enumerate(backends))
    return (
        f'workers = 1\nshutdown_timeout = "2s"\n\n[[listener]]\nname = "ir"\nlisten = "127.0.0.1:{listen}"\n'
        f'cluster = "ir"\ncorrelation = "{correlation}"\n{EXTRA}[listener.codec]\nkind = "length_field"\n'
        'length_width = 4\nkey = { offset = 4, width = 8 }\nid = { offset = 12, width = 4 }\n\n'
        f'[[cluster]]\nname = "ir"\npolicy = "{policy}"\nbackends = [{listed}]\n{pins}'
    )


def demo_request(c, sent, shared):
    key = (c * 1000003 + sent) % 997 if shared else c
    return struct.pack(">IQI", 12 + len(PAYLOAD), key, sent) + PAYLOAD


def demo_answers(buf):
    """Whole demo-protocol answers at the head of `buf`: (how many, the rest)."""
    n = 0
    while len(buf) >= 4:
        size = 4 + struct.unpack(">I", buf[:4])[0]
        if len(buf) < size:
            break
        buf = buf[size:]
        n += 1
    return n, buf


def resp_request(c, sent, _shared):
    """A GET of a key that does not exist: every answer is `$-1\\r\\n`."""
    key = f"k{(c * 7919 + sent) % 1000}".encode()
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


def resp_answers(buf):
    n = buf.count(b"\r\n")
    return n, (buf[buf.rfind(b"\r\n") + 2:] if n else buf)


def client(port, c, count, mode, errors):
    """One connection: `count` requests of `mode`, at most DEPTH in flight, every answer read."""
    request, answers = (resp_request, resp_answers) if mode == "resp" else (demo_request, demo_answers)
    shared = mode == "byid-shared"
    try:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(60)
        sent = got = 0
        buf = b""
        while got < count:
            out = []
            while sent < count and sent - got < DEPTH:
                out.append(request(c, sent, shared))
                sent += 1
            if out:
                s.sendall(b"".join(out))
            data = s.recv(65536)
            if not data:
                errors.append(f"connection {c} closed after {got} answers")
                return
            n, buf = answers(buf + data)
            got += n
        s.close()
    except OSError as e:
        errors.append(f"connection {c}: {e}")


def count(binary, mode, messages, workdir, cpu=False):
    """The worker thread's instructions for one run of `messages` messages; with `cpu`, the
    proxy runs without valgrind and the result is its (user, system) CPU seconds over the
    clients' run."""
    backends = [free_port() for _ in range(3)]
    if mode == "resp":
        procs = [
            subprocess.Popen(["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for p in backends
        ]
    else:
        procs = [
            subprocess.Popen([SWITCHYARD, "backend", "--listen", f"127.0.0.1:{p}", "--name", f"b{i}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, p in enumerate(backends)
        ]
    try:
        for p, proc in zip(backends, procs):
            wait_port(p, proc, "backend")
        listen = free_port()
        cfg = os.path.join(workdir, "ir.toml")
        with open(cfg, "w") as f:
            f.write(config(mode, listen, backends))
        out = os.path.join(workdir, f"cg.{os.getpid()}.{time.time_ns()}")
        under = [] if cpu else ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                                f"--callgrind-out-file={out}"]
        proxy = subprocess.Popen(under + [binary, "--log", "warn", "run", "--config", cfg],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(listen, proxy, binary, timeout=60)
        before = cpu_times(proxy.pid)
        errors = []
        per = messages // CONNS
        threads = [threading.Thread(target=client, args=(listen, c, per, mode, errors))
                   for c in range(CONNS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = cpu_times(proxy.pid)
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=120)
        if errors:
            sys.exit(f"{binary}: {errors[0]}")
        if cpu:
            return (after[0] - before[0], after[1] - before[1]), per * CONNS
        # Thread 1 is main; the worker is the thread that ran the most instructions.
        totals = []
        for path in glob.glob(out + "-*"):
            with open(path) as f:
                for line in f:
                    if line.startswith("summary:") or line.startswith("totals:"):
                        totals.append(int(line.split()[1]))
                        break
        if not totals:
            sys.exit(f"{binary}: callgrind wrote no counts to {out}-*")
        return max(totals), per * CONNS
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def cpu_times(pid):
    """(user, system) CPU seconds of process `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_rounds(args, workdir):
    """`--cpu`: binaries alternated, `--rounds` times; medians of user and system µs/message."""
    runs = {b: [] for b in args.bin}
    for r in range(args.rounds):
        for b in args.bin:
            (user, system), n = count(b, args.mode, args.large, workdir, cpu=True)
            runs[b].append((user / n * 1e6, system / n * 1e6))
            print(f"round {r + 1} {b}: user {runs[b][-1][0]:.2f} system {runs[b][-1][1]:.2f} µs/message",
                  flush=True)
    for b, v in runs.items():
        user = statistics.median(x[0] for x in v)
        system = statistics.median(x[1] for x in v)
        print(f"{b}: user {user:.2f} system {system:.2f} µs/message ({args.mode}, depth {DEPTH}, "
              f"median of {args.rounds})")


def main():
    global EXTRA, DEPTH
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", required=True, help="a switchyard binary (repeat to compare)")
    ap.add_argument("--mode", default="bench", choices=["bench", "byid", "byid-shared", "resp"])
    ap.add_argument("--listener-extra", default="", help="lines added to the listener's table")
    ap.add_argument("--small", type=int, default=40000)
    ap.add_argument("--large", type=int, default=200000)
    ap.add_argument("--cpu", action="store_true", help="CPU time per message, without valgrind")
    ap.add_argument("--rounds", type=int, default=3, help="with --cpu: rounds")
    ap.add_argument("--depth", type=int, default=DEPTH, help="requests in flight per connection")
    args = ap.parse_args()
    DEPTH = args.depth
    EXTRA = args.listener_extra.replace("\\n", "\n") + ("\n" if args.listener_extra else "")
    if args.cpu:
        with tempfile.TemporaryDirectory() as workdir:
            cpu_rounds(args, workdir)
        return
    if subprocess.run(["valgrind", "--version"], capture_output=True).returncode != 0:
        sys.exit("valgrind not found: apt-get install valgrind")
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for b in args.bin:
            small, n_small = count(b, args.mode, args.small, workdir)
            large, n_large = count(b, args.mode, args.large, workdir)
            per = (large - small) / (n_large - n_small)
            results.append(per)
            print(f"{b}: {per:.0f} instructions/message ({args.mode}; worker {small} at {n_small}, {large} at {n_large})",
                  flush=True)
    if len(results) > 1:
        for b, per in zip(args.bin[1:], results[1:]):
            print(f"{b} / {args.bin[0]}: {per / results[0]:.3f}")


if __name__ == "__main__":
    main()
