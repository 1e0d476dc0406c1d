#!/usr/bin/env python3
"""A looping protocol script must not stall its worker's other listeners.

One worker, two listeners over the same demo backend: `native` (the demo protocol,
`length_field`, `by_id`) and `looping` (a Lua script whose `scan` never returns). A client
sends demo requests to `native` one at a time and records each answer's latency, first
alone, then while 8 clients keep connecting to `looping` and sending a request. Prints
p50/p99/max of each phase and the log lines the looping clients caused.

    python3 bench/script_stall.py [--bin target/release/switchyard] [--seconds 5]

Everything runs on 127.0.0.1; every loop is bounded by --seconds.
"""

import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def demo_request(key, rid, payload=b"x" * 32):
    body = struct.pack(">QI", key, rid) + payload
    return struct.pack(">I", len(body)) + body


def read_frame(s):
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    n = struct.unpack(">I", head)[0]
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return head + body


def latencies(addr, seconds):
    s = socket.create_connection(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    end = time.monotonic() + seconds
    rid = 0
    while time.monotonic() < end:
        t = time.perf_counter()
        s.sendall(demo_request(7, rid))
        read_frame(s)
        out.append((time.perf_counter() - t) * 1e6)
        rid += 1
    s.close()
    return sorted(out)


def hammer(addr, stop, counter):
    while not stop.is_set():
        try:
            s = socket.create_connection(addr, timeout=5)
            s.sendall(demo_request(1, 1))
            while s.recv(4096):
                pass
            s.close()
            counter[0] += 1
        except OSError:
            time.sleep(0.001)


def pct(v, q):
    return v[min(len(v) - 1, int(q * (len(v) - 1)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/switchyard")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="script-stall-")
    backend_port = free_port()
    backend = subprocess.Popen(
        [args.bin, "backend", "--listen", f"127.0.0.1:{backend_port}", "--name", "b1"],
        stdout=subprocess.PIPE,
    )
    backend.stdout.readline()
    script = os.path.join(tmp, "loop.lua")
    with open(script, "w") as f:
        f.write("return { scan = function(data, len, out) while true do end end }\n")
    config = os.path.join(tmp, "stall.toml")
    with open(config, "w") as f:
        f.write(
            f"""workers = 1
[[listener]]
name = "native"
listen = "127.0.0.1:0"
cluster = "c"
correlation = "by_id"
[listener.codec]
kind = "length_field"
length_width = 4
key = {{ offset = 4, width = 8 }}
id = {{ offset = 12, width = 4 }}

[[listener]]
name = "looping"
listen = "127.0.0.1:0"
cluster = "c"
[listener.codec]
kind = "lua"
script = "{script}"

[[cluster]]
name = "c"
backends = [{{ address = "127.0.0.1:{backend_port}" }}]
"""
        )
    log = open(os.path.join(tmp, "stderr.log"), "w")
    proxy = subprocess.Popen(
        [args.bin, "run", "--config", config], stdout=subprocess.PIPE, stderr=log
    )
    addrs = {}
    while len(addrs) < 2:
        words = proxy.stdout.readline().decode().split()
        if len(words) == 3 and words[0] == "listening":
            host, port = words[2].rsplit(":", 1)
            addrs[words[1]] = (host, int(port))
    try:
        alone = latencies(addrs["native"], args.seconds)
        stop = threading.Event()
        counter = [0]
        threads = [
            threading.Thread(target=hammer, args=(addrs["looping"], stop, counter))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        time.sleep(0.2)
        loaded = latencies(addrs["native"], args.seconds)
        stop.set()
        for t in threads:
            t.join()
    finally:
        proxy.terminate()
        backend.terminate()
        proxy.wait()
        backend.wait()
    log.close()
    text = open(os.path.join(tmp, "stderr.log")).read()
    print(f"binary: {args.bin}")
    print("| phase | requests | p50 µs | p99 µs | max µs |")
    print("|---|---|---|---|---|")
    for name, v in [("native alone", alone), ("native + 8 looping clients", loaded)]:
        print(f"| {name} | {len(v)} | {pct(v, 0.5):.0f} | {pct(v, 0.99):.0f} | {v[-1]:.0f} |")
    print(
        f"looping connections: {counter[0]}; log lines: {len(text.splitlines())}, of which "
        f"'time limit': {text.count('time limit')}, 'suspended': {text.count('failed 5 calls in a row')}"
    )


if __name__ == "__main__":
    sys.exit(main())
