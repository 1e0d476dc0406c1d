#!/usr/bin/env python3
"""CPU per SIP call: SIPp (Debian `sip-tester`) calls through Switchyard (one worker,
examples/scripts/sip.lua, least_sessions) to three SIPp servers, beside the same calls
straight to one SIPp server and, if Debian's `kamailio` is installed, through Kamailio's
dispatcher module (one TCP worker, stateful, record-routing, round robin) to the same three
servers; in interleaved rounds (direct, switchyard, kamailio, direct, ...).

A call is INVITE, 100, 180, 200, ACK, BYE, 200 (tests/it/sip/uac.xml and uas.xml), every
call on one long-lived TCP connection from the client (`-t t1`). For each run: calls that
completed (SIPp's own counter), the run's wall time, and the CPU time the proxy spent during
it (every thread of every process, from /proc/PID/task/*/schedstat, in nanoseconds), per
call; and the SIPp client's and servers' CPU per call, for scale. Prints one row per run
and the medians per variant.

    python3 bench/sip.py [--rounds 3] [--calls 4000] [--rate 800] [--bin target/release/switchyard]

Everything on 127.0.0.1; every run bounded by its call count and a timeout.
"""
import argparse, glob, os, shutil, statistics, subprocess, sys, tempfile, time

from loopback import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCEN = os.path.join(ROOT, "tests", "it", "sip")
SCRIPT = os.path.join(ROOT, "examples", "scripts", "sip.lua")
MEDIA = [40000]


def media_port():
    MEDIA[0] += 10
    return str(MEDIA[0])


def cpu_ns(pids):
    """CPU time, in nanoseconds, of every thread of the processes `pids`."""
    total = 0
    for pid in pids:
        for stat in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                with open(stat) as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    return total


def user_sys(pids):
    """(user, system) CPU seconds of the processes `pids`, from /proc/PID/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    u = k = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            u, k = u + int(fields[11]) / tick, k + int(fields[12]) / tick
        except OSError:
            pass
    return u, k


def sipp(scenario, stf, *args):
    return ["sipp", "-sf", os.path.join(SCEN, scenario), "-i", "127.0.0.1", "-ci", "127.0.0.1",
            "-nostdin", "-max_socket", "1000", "-trace_stat", "-fd", "1", "-mp", media_port(),
            "-stf", stf, *args]


def last_stats(stf):
    lines = [l for l in open(stf).read().splitlines() if l.strip()]
    return dict(zip(lines[0].split(";"), lines[-1].split(";")))


def kamailio_config(tmp, port, servers):
    with open(os.path.join(tmp, "dispatcher.list"), "w") as f:
        for s in servers:
            f.write(f"1 sip:127.0.0.1:{s};transport=tcp\n")
    path = os.path.join(tmp, "kamailio.cfg")
    modules = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
    with open(path, "w") as f:
        f.write(f"""#!KAMAILIO
debug=0
log_stderror=yes
fork=yes
children=1
tcp_children=1
disable_tcp=no
auto_aliases=no
listen=tcp:127.0.0.1:{port}
loadpath "{modules}"
loadmodule "pv.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "dispatcher.so"
modparam("dispatcher", "list_file", "{tmp}/dispatcher.list")
modparam("dispatcher", "ds_ping_interval", 0)
request_route {{
	if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
	if (has_totag()) {{
		if (loose_route()) {{ t_relay(); exit; }}
		if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
		sl_send_reply("404", "Not here");
		exit;
	}}
	if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
	record_route();
	if (!ds_select_dst("1", "4")) {{ sl_send_reply("503", "No destination"); exit; }}
	t_relay();
}}
""")
    return path


def switchyard_config(tmp, port, servers):
    backends = ", ".join(f'{{ address = "127.0.0.1:{s}" }}' for s in servers)
    path = os.path.join(tmp, "sip.toml")
    with open(path, "w") as f:
        f.write(f"""workers = 1
[[listener]]
name = "sip"
listen = "127.0.0.1:{port}"
cluster = "sip"
[listener.codec]
kind = "lua"
script = "{SCRIPT}"
[[cluster]]
name = "sip"
policy = "least_sessions"
on_backend_down = "fail"
request_timeout = "32s"
backends = [{backends}]
[cluster.persistence]
ttl = "4h"
""")
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--rate", type=int, default=800)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "switchyard"))
    a = ap.parse_args()
    if not shutil.which("sipp"):
        sys.exit("sipp is missing: apt-get install sip-tester")
    tmp = tempfile.mkdtemp(prefix="sy-sip-bench-")
    procs = []
    try:
        servers = [free_port() for _ in range(3)]
        server_procs = []
        for s in servers:
            p = subprocess.Popen(sipp("uas.xml", os.path.join(tmp, f"s{s}.csv"), "-t", "t1", "-p", str(s)),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, cwd=tmp)
            procs.append(p)
            server_procs.append(p)
            wait_port(s, p, "sipp server")
        targets = {"direct": ([], servers[0])}
        sy_port = free_port()
        sy = subprocess.Popen([a.bin, "--log", "warn", "run", "--config",
                               switchyard_config(tmp, sy_port, servers)],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "sy.log"), "w"))
        procs.append(sy)
        wait_port(sy_port, sy, "switchyard")
        targets["switchyard"] = ([sy.pid], sy_port)
        if shutil.which("kamailio") or os.path.exists("/usr/sbin/kamailio"):
            k_port = free_port()
            # -m: 1 GiB of shared memory (the default runs out at 800 calls/s: tm keeps
            # each transaction a while after it ends).
            kam = subprocess.Popen(["/usr/sbin/kamailio", "-f", kamailio_config(tmp, k_port, servers),
                                    "-DD", "-E", "-m", "1024", "-M", "32"], stdout=subprocess.DEVNULL,
                                   stderr=open(os.path.join(tmp, "kamailio.log"), "w"))
            procs.append(kam)
            wait_port(k_port, kam, "kamailio")
            time.sleep(0.5)
            # Kamailio forks its workers: count every process of its group.
            kids = subprocess.run(["pgrep", "-g", str(os.getpgid(kam.pid))], capture_output=True,
                                  text=True).stdout.split()
            kpids = sorted({int(p) for p in kids} | {kam.pid})
            targets["kamailio"] = (kpids, k_port)
        else:
            print("kamailio is not installed (apt-get install kamailio): no Kamailio rows")
        rows = {name: [] for name in targets}
        print(f"{a.rounds} rounds of {a.calls} calls at {a.rate} calls/s, one TCP connection each run\n")
        print(f"{'variant':<11} {'round':>5} {'calls ok':>8} {'failed':>6} {'calls/s':>8} "
              f"{'proxy µs/call':>13} {'proxy user %':>12} {'sipp client µs/call':>19} {'sipp servers µs/call':>20}")
        for r in range(1, a.rounds + 1):
            for name, (pids, port) in targets.items():
                stf = os.path.join(tmp, f"c-{name}-{r}.csv")
                spids = [p.pid for p in server_procs]
                before = (cpu_ns(pids), cpu_ns(spids), time.time(), user_sys(pids))
                c = subprocess.Popen(sipp("uac.xml", stf, f"127.0.0.1:{port}", "-t", "t1",
                                          "-p", str(free_port()), "-m", str(a.calls), "-r", str(a.rate),
                                          "-recv_timeout", "10000", "-timeout", "120s", "-timeout_error"),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=tmp)
                _, status, usage = os.wait4(c.pid, 0)
                c.returncode = os.waitstatus_to_exitcode(status)
                wall = time.time() - before[2]
                proxy_ns, server_ns = cpu_ns(pids) - before[0], cpu_ns(spids) - before[1]
                us = user_sys(pids)
                user_share = (us[0] - before[3][0]) / max(us[0] + us[1] - sum(before[3]), 1e-9)
                st = last_stats(stf)
                ok, failed = int(st["SuccessfulCall(C)"]), int(st["FailedCall(C)"])
                if c.returncode != 0 or ok != a.calls:
                    print(f"  {name} round {r}: SIPp exited {c.returncode} with {ok} of {a.calls} calls completed")
                client_us = (usage.ru_utime + usage.ru_stime) * 1e6 / max(ok, 1)
                row = (ok, failed, ok / wall, proxy_ns / 1e3 / max(ok, 1), client_us, server_ns / 1e3 / max(ok, 1),
                       user_share * 100)
                rows[name].append(row)
                print(f"{name:<11} {r:>5} {ok:>8} {failed:>6} {row[2]:>8.0f} "
                      f"{row[3] if pids else 0:>13.1f} {row[6] if pids else 0:>12.0f} {row[4]:>19.1f} {row[5]:>20.1f}")
                time.sleep(1)
        print("\nmedians")
        med = {n: [statistics.median(x[i] for x in v) for i in range(7)] for n, v in rows.items()}
        for n, m in med.items():
            print(f"{n:<11} calls/s {m[2]:.0f}, proxy {m[3] if targets[n][0] else 0:.1f} µs/call "
                  f"({m[6] if targets[n][0] else 0:.0f}% in user space), "
                  f"sipp client {m[4]:.1f} µs/call, sipp servers {m[5]:.1f} µs/call")
        if "kamailio" in med:
            print(f"\nswitchyard/kamailio CPU per call: {med['switchyard'][3] / med['kamailio'][3]:.2f}")
        print(f"switchyard CPU per call / the SIPp server's own (direct): "
              f"{med['switchyard'][3] / med['direct'][5]:.2f}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
