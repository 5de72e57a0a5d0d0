"""Check the network cost model (:mod:`mpc_fl.netmodel`) against an emulated network.

Run by hand, as root (not part of the test suite)::

    sudo .venv/bin/python experiments/netem_check.py \
        --setting 5:100 --setting 20:100 --setting 0:1

What it does:

1. Probes the kernel: network namespaces, veth, bridge, and the qdiscs it needs
   (``htb``, ``u32`` filters, ``netem``). Every failure is recorded with the exact
   error message (and the kernel's ``CONFIG_NET_SCH_NETEM`` / ``CONFIG_MODULES`` when
   ``/proc/config.gz`` exists).
2. Builds four namespaces: ``bank`` (10.200.0.1), ``provider`` (10.200.0.2) and
   ``dealer`` (10.200.0.3), each with one veth into a ``sw`` namespace holding a bridge.
   Only these private addresses are used; the root namespace is not touched.
3. Runs ``mpc-fl party`` (bank, provider) and ``mpc-fl dealer`` inside them, once on the
   bare link (the compute time) and once per setting ``DELAY_MS:RATE_MBIT``. A setting
   shapes each computing party's *uplink* (egress of its veth)::

       tc qdisc add dev eth0 root handle 1: htb default 10
       tc class add dev eth0 parent 1: classid 1:10 htb rate Ymbit ceil Ymbit      # to the other party
       tc class add dev eth0 parent 1: classid 1:20 htb rate 10gbit ...            # to the dealer
       tc filter add dev eth0 parent 1: protocol ip u32 match ip dst 10.200.0.3/32 flowid 1:20
       tc qdisc add dev eth0 parent 1:10 handle 10: netem delay Xms               # only if X > 0

   so traffic between the two parties sees X ms one way (RTT 2X) and Y Mbit/s per
   direction (full duplex), while the dealer's link stays free, as the model assumes
   (it counts the dealer as preprocessing). ``htb`` does the bandwidth, ``netem`` the delay.
4. Compares the measured fit time (the slower party's ``fit_s``) with
   ``predict_time(compute_s, bytes_sent_max_party, rounds, NetworkProfile(2X, Y))``,
   where compute_s is the bare-link fit time and bytes/rounds come from the same run's
   ledgers (phases ``setup`` + ``training``; see :data:`mpc_fl.netmodel.FIT_PHASES`).

Settings with a delay need netem; where the kernel has none they are recorded as
skipped with the reason (latency is deliberately *not* emulated in user space).
Bandwidth-only settings (``0:RATE``) need only htb. Namespaces are removed in a
``finally`` block. Results: ``benchmarks/results/netem_check.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mpc_fl.app.launch import launch  # noqa: E402
from mpc_fl.netmodel import LAN, WAN, NetworkProfile, predict_time, traffic_summary  # noqa: E402
from mpc_fl.runtime.provenance import provenance  # noqa: E402

ADDR = {"bank": "10.200.0.1", "provider": "10.200.0.2", "dealer": "10.200.0.3"}
PARTIES = ("bank", "provider")
DEV = "eth0"  # the veth end inside each party namespace
DEFAULT_PARAMS = ["n_epochs=1", "sigmoid=taylor1"]
DEFAULT_SETTINGS = ["5:100", "20:100", "0:100", "0:1", "0:0.25"]


class CommandFailed(RuntimeError):
    pass


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise CommandFailed(f"`{' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def kernel_config(*keys: str) -> dict[str, str]:
    try:
        with gzip.open("/proc/config.gz", "rt") as fh:
            text = fh.read()
    except OSError as err:
        return {"error": f"/proc/config.gz: {err}"}
    out = {}
    for key in keys:
        line = next((ln for ln in text.splitlines() if ln.startswith(f"{key}=") or f" {key} " in ln), None)
        out[key] = line or "absent"
    return out


def probe(prefix: str) -> dict:
    """Try each kernel feature the check needs on a throw-away pair of namespaces."""
    res: dict = {"euid": os.geteuid(), "kernel": platform.release()}
    a, b = f"{prefix}-pa", f"{prefix}-pb"
    steps = {
        "netns": ["ip", "netns", "add", a],
        "netns2": ["ip", "netns", "add", b],
        "veth": ["ip", "-n", a, "link", "add", "pv", "type", "veth", "peer", "name", "pv", "netns", b],
        "bridge": ["ip", "-n", b, "link", "add", "br0", "type", "bridge"],
        "up": ["ip", "-n", a, "link", "set", "pv", "up"],
        "htb": ["tc", "-n", a, "qdisc", "add", "dev", "pv", "root", "handle", "1:", "htb", "default", "10"],
        "htb_class": ["tc", "-n", a, "class", "add", "dev", "pv", "parent", "1:", "classid", "1:10",
                      "htb", "rate", "100mbit"],
        "u32_filter": ["tc", "-n", a, "filter", "add", "dev", "pv", "parent", "1:", "protocol", "ip",
                       "prio", "1", "u32", "match", "ip", "dst", "10.200.0.3/32", "flowid", "1:10"],
        "netem_leaf": ["tc", "-n", a, "qdisc", "add", "dev", "pv", "parent", "1:10", "handle", "10:",
                       "netem", "delay", "5ms"],
        "netem_root": ["tc", "-n", b, "qdisc", "add", "dev", "pv", "root", "netem", "delay", "5ms",
                       "rate", "100mbit"],
        "tbf_root": ["tc", "-n", b, "qdisc", "replace", "dev", "pv", "root", "tbf", "rate", "100mbit",
                     "burst", "64kb", "latency", "100ms"],
    }  # fmt: skip
    try:
        for name, cmd in steps.items():
            p = sh(*cmd, check=False)
            res[name] = "ok" if p.returncode == 0 else f"FAILED ({p.returncode}): {p.stderr.strip()}"
    finally:
        for ns in (a, b):
            sh("ip", "netns", "del", ns, check=False)
    res["kernel_config"] = kernel_config(
        "CONFIG_NET_SCH_NETEM",
        "CONFIG_MODULES",
        "CONFIG_NET_SCH_HTB",
        "CONFIG_NET_SCH_TBF",
        "CONFIG_NET_CLS_U32",
    )
    res["netem_ok"] = res["netem_leaf"] == "ok" and res["netem_root"] == "ok"
    res["htb_ok"] = all(res[k] == "ok" for k in ("htb", "htb_class", "u32_filter"))
    res["netns_ok"] = all(res[k] == "ok" for k in ("netns", "netns2", "veth", "bridge", "up"))
    return res


class Topology:
    """bank / provider / dealer namespaces, each with a veth into a bridge in a ``sw`` namespace."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ns = {r: f"{prefix}-{r}" for r in ADDR}
        self.sw = f"{prefix}-sw"
        self.created: list[str] = []

    def __enter__(self) -> Topology:
        try:
            for ns in [self.sw, *self.ns.values()]:
                sh("ip", "netns", "add", ns)
                self.created.append(ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.sw, "link", "set", "br0", "up")
            for role, ns in self.ns.items():
                port = f"p-{role}"[:15]
                sh("ip", "-n", self.sw, "link", "add", port, "type", "veth", "peer", "name", DEV, "netns", ns)
                sh("ip", "-n", self.sw, "link", "set", port, "master", "br0")
                sh("ip", "-n", self.sw, "link", "set", port, "up")
                sh("ip", "-n", ns, "addr", "add", f"{ADDR[role]}/24", "dev", DEV)
                sh("ip", "-n", ns, "link", "set", DEV, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in reversed(self.created):
            sh("ip", "netns", "del", ns, check=False)
        self.created.clear()

    def shape(self, delay_ms: float, rate_mbit: float) -> list[str]:
        """Shape both computing parties' uplinks; return the tc commands used."""
        cmds = []
        for role in PARTIES:
            ns = self.ns[role]
            sh("tc", "-n", ns, "qdisc", "del", "dev", DEV, "root", check=False)
            steps = [
                ["qdisc", "add", "dev", DEV, "root", "handle", "1:", "htb", "default", "10"],
                ["class", "add", "dev", DEV, "parent", "1:", "classid", "1:10", "htb",
                 "rate", f"{rate_mbit}mbit", "ceil", f"{rate_mbit}mbit"],
                ["class", "add", "dev", DEV, "parent", "1:", "classid", "1:20", "htb",
                 "rate", "10gbit", "ceil", "10gbit", "quantum", "60000"],
                ["filter", "add", "dev", DEV, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                 "match", "ip", "dst", f"{ADDR['dealer']}/32", "flowid", "1:20"],
            ]  # fmt: skip
            if delay_ms > 0:
                steps.append(
                    ["qdisc", "add", "dev", DEV, "parent", "1:10", "handle", "10:", "netem",
                     "delay", f"{delay_ms}ms", "limit", "100000"]
                )  # fmt: skip
            for s in steps:
                sh("tc", "-n", ns, *s)
                cmds.append(f"tc -n {role} " + " ".join(s))
        return cmds

    def unshape(self) -> None:
        for role in PARTIES:
            sh("tc", "-n", self.ns[role], "qdisc", "del", "dev", DEV, "root", check=False)


def run_once(topo: Topology, args: argparse.Namespace, out_dir: Path, port: int) -> dict:
    from mpc_fl.runtime.federation import Member, federation_text
    from mpc_fl.runtime.identity import make_identity

    py = [sys.executable, "-m", "mpc_fl.app.cli"]
    keys, members = {}, []
    for role in (*PARTIES, "dealer"):  # a fresh federation per run: members listen inside their namespaces
        keys[role], cert = make_identity(role, out_dir / "keys")
        members.append(Member(role, ADDR[role], port, cert.read_text()))
    fed_file = out_dir / "federation.toml"
    fed_file.write_text(federation_text(members))
    common = ["--federation", str(fed_file), "--connect-timeout", "120"]
    params = [x for p in args.param for x in ("--param", p)]
    data = {"bank": args.data / "guest.csv", "provider": args.data / "host.csv"}
    commands = {
        r: ["ip", "netns", "exec", topo.ns[r], *py, "party", "--role", r, "--key", str(keys[r]),
            "--data", str(data[r]), "--protocol", args.protocol, "--align", "sorted",
            "--split", "stratified-public", "--out", str(out_dir / f"{r}.json"), *common, *params]
        for r in PARTIES
    }  # fmt: skip
    commands["dealer"] = [
        "ip",
        "netns",
        "exec",
        topo.ns["dealer"],
        *py,
        "dealer",
        "--key",
        str(keys["dealer"]),
        *common,
    ]
    t0 = time.perf_counter()
    launch(commands, out_dir / "logs", env={"PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    reports = {r: json.loads((out_dir / f"{r}.json").read_text()) for r in PARTIES}
    summary = traffic_summary({r: rep["ledger"] for r, rep in reports.items()})
    return {
        "fit_s": max(rep["fit_s"] for rep in reports.values()),
        "fit_s_per_party": {r: rep["fit_s"] for r, rep in reports.items()},
        "process_wall_s": wall,
        "metrics": reports["bank"]["metrics"],
        "params": reports["bank"]["params"],
        "traffic": summary,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", action="append", default=None, metavar="DELAY_MS:RATE_MBIT",
                    help="one-way delay (ms) and bandwidth (Mbit/s) per direction; repeatable "
                         f"(default {' '.join(DEFAULT_SETTINGS)})")  # fmt: skip
    ap.add_argument("--repeats", type=int, default=2, help="runs per setting (median reported)")
    ap.add_argument("--protocol", default="ss_lr")
    ap.add_argument("--param", action="append", default=None, metavar="KEY=VALUE")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "breast")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "netem_check.json")
    ap.add_argument(
        "--port", type=int, default=29611, help="each member's listening port (inside its namespace)"
    )
    args = ap.parse_args(argv)
    args.param = args.param or DEFAULT_PARAMS
    settings = [tuple(float(x) for x in s.split(":")) for s in (args.setting or DEFAULT_SETTINGS)]

    prefix = f"mpcfl{os.getpid() % 100000}"
    result: dict = {
        "script": "experiments/netem_check.py",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "protocol": args.protocol,
        "params_cli": args.param,
        "data": str(args.data),
        "repeats": args.repeats,
        "topology": "bank/provider/dealer netns, veth into a bridge; party uplinks shaped (htb rate + netem delay); "
        "dealer link unshaped",
        "model": "predict_time(compute_s, bytes_sent_max_party, rounds, NetworkProfile(rtt=2*delay, bw=rate)); "
        "compute_s = median bare-link fit_s; bytes/rounds = fit phases (setup+training) of the shaped run",
        "provenance": provenance(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
    }
    if os.geteuid() != 0:
        result["error"] = "not root: network namespaces and tc need CAP_NET_ADMIN"
        print(result["error"], file=sys.stderr)
        return 2
    result["sandbox"] = sb = probe(prefix)
    print("probe:", json.dumps({k: v for k, v in sb.items() if k != "kernel_config"}, indent=1))
    if not sb["netns_ok"]:
        result["error"] = "network namespaces / veth / bridge unavailable (see sandbox)"
        _write(args.out, result)
        return 2

    rows = []
    port = args.port
    try:
        with Topology(prefix) as topo, tempfile.TemporaryDirectory(prefix="netem_check_") as tmp:
            base_runs = []
            for i in range(args.repeats):
                port += 1
                base_runs.append(run_once(topo, args, Path(tmp) / f"base{i}", port))
                print(f"bare link run {i}: fit {base_runs[-1]['fit_s']:.3f} s")
            compute_s = statistics.median(r["fit_s"] for r in base_runs)
            base_traffic = base_runs[0]["traffic"]
            result["baseline"] = {"fit_s_runs": [r["fit_s"] for r in base_runs], "compute_s": compute_s,
                                  "traffic": base_traffic, "metrics": base_runs[0]["metrics"],
                                  "params": base_runs[0]["params"]}  # fmt: skip
            result["presets"] = {
                p.name: {
                    "rtt_s": p.rtt_s,
                    "bandwidth_bps": p.bandwidth_bps,
                    "predicted_fit_s": predict_time(
                        compute_s, base_traffic["bytes_sent_max_party"], base_traffic["rounds"], p
                    ),
                }
                for p in (LAN, WAN)
            }
            for delay_ms, rate_mbit in settings:
                row: dict = {"delay_ms_one_way": delay_ms, "rtt_ms": 2 * delay_ms, "rate_mbit": rate_mbit}
                rows.append(row)
                if delay_ms > 0 and not sb["netem_ok"]:
                    row["skipped"] = f"netem unavailable: {sb['netem_leaf']}"
                    print(f"setting {delay_ms} ms / {rate_mbit} Mbit: SKIPPED ({row['skipped']})")
                    continue
                if not sb["htb_ok"]:
                    row["skipped"] = f"htb/u32 unavailable: {sb['htb_class']} {sb['u32_filter']}"
                    continue
                try:
                    row["tc"] = topo.shape(delay_ms, rate_mbit)
                    runs = []
                    for i in range(args.repeats):
                        port += 1
                        runs.append(run_once(topo, args, Path(tmp) / f"d{delay_ms}r{rate_mbit}-{i}", port))
                finally:
                    topo.unshape()
                measured = statistics.median(r["fit_s"] for r in runs)
                tr = runs[0]["traffic"]
                prof = NetworkProfile(f"{delay_ms}ms/{rate_mbit}mbit", 2 * delay_ms / 1e3, rate_mbit * 1e6)
                predicted = predict_time(compute_s, tr["bytes_sent_max_party"], tr["rounds"], prof)
                # sensitivity: the parties' transfers not overlapping at all (sum, not max, of bytes)
                bytes_sum = sum(p["bytes_sent"] for p in tr["per_party"].values())
                predicted_seq = predict_time(compute_s, bytes_sum, tr["rounds"], prof)
                row.update(
                    measured_fit_s=measured,
                    measured_runs=[r["fit_s"] for r in runs],
                    predicted_fit_s=predicted,
                    error_pct=100 * (predicted - measured) / measured,
                    predicted_fit_s_no_overlap=predicted_seq,
                    error_pct_no_overlap=100 * (predicted_seq - measured) / measured,
                    compute_s=compute_s,
                    latency_term_s=tr["rounds"] * prof.rtt_s / 2,
                    bandwidth_term_s=tr["bytes_sent_max_party"] * 8 / prof.bandwidth_bps,
                    bytes_sent_max_party=tr["bytes_sent_max_party"],
                    rounds=tr["rounds"],
                    traffic=tr,
                )
                print(
                    f"setting {delay_ms} ms / {rate_mbit} Mbit: measured {measured:.3f} s, "
                    f"predicted {predicted:.3f} s ({row['error_pct']:+.1f} %), "
                    f"no-overlap bound {predicted_seq:.3f} s ({row['error_pct_no_overlap']:+.1f} %)"
                )
    finally:
        leftover = [
            ns for ns in sh("ip", "netns", "list", check=False).stdout.split() if ns.startswith(prefix)
        ]
        result["leftover_namespaces"] = leftover
        result["settings"] = rows
        _write(args.out, result)
    return 0


def _write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"-> {path}")


if __name__ == "__main__":
    sys.exit(main())
