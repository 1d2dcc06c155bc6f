#!/usr/bin/env python3
"""fleet benchmark harness: runs every figure of issue #7 and writes a report.

Real parts only: the fleet-controller, fleet-agent and fleetctl binaries,
bench/agent_simulator (N agents on N connections), releases signed with a key
made by `fleetctl keys generate`, nginx and curl as the artifact-serving peer,
openssl as the hashing peer and the sqlite3 CLI as the ingest peer. Every
process started here is ended on exit, failure or signal.

Usage (bench/run.sh builds the binaries and calls this):
  run.py --mode quick|full --bin-dir DIR --sample-app PATH --out RESULTS.md
         [--work DIR] [--commit HASH] [--command "bench/run.sh full"]
         [--notes NOTES.md] [--only fleet,artifact,verify,telemetry,agent]
  run.py --from-json RESULTS.md.json --out RESULTS.md --notes NOTES.md
         (rewrites the report of an earlier run, e.g. after editing notes)

Figures are measured, never asserted; a figure that could not be measured is
reported as such (and in quick mode the caller checks every one is present).
"""

import argparse
import atexit
import datetime
import hashlib
import json
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

SIZES = {
    # ramp steps, agents for the fan-out/rollout/storm figures, artifact MiB,
    # telemetry agents x events, events for the query figure, footprint s
    "quick": dict(ramp=[50, 100], beyond=[150], fleet=100, artifact_mib=16,
                  concurrency=[1, 4], tele_agents=20, tele_events=200,
                  query_events=20000, footprint_s=5, settle_s=2,
                  idle_window_s=3, connect_rate=500),
    "full": dict(ramp=[1000, 2000, 5000, 10000], beyond=[15000, 19000],
                 fleet=10000, artifact_mib=200, concurrency=[1, 32],
                 tele_agents=1000, tele_events=1000,
                 query_events=10_000_000, footprint_s=60, settle_s=10,
                 idle_window_s=20, connect_rate=1000),
}

_children = []


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def end_children():
    for p in list(_children):
        if p.poll() is None:
            try:
                p.terminate()
            except OSError:
                pass
    deadline = time.time() + 10
    for p in list(_children):
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    _children.clear()


def on_signal(signum, _frame):
    end_children()
    sys.exit(128 + signum)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(args, log_path=None, stdin=None, stdout=None, env=None):
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    p = subprocess.Popen(args, stdin=stdin,
                         stdout=stdout if stdout is not None else out,
                         stderr=out, env=env, preexec_fn=raise_nofile)
    _children.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=20):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in _children:
        _children.remove(p)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def has_flag(binary, flag):
    r = subprocess.run([binary, "--help"], capture_output=True, text=True)
    return flag in r.stdout + r.stderr


def insecure_flag(binary):
    """["--insecure"] when `binary` has that flag: the bench talks plaintext
    on 127.0.0.1, and binaries with TLS support ask for it explicitly."""
    r = subprocess.run([binary, "--help"], capture_output=True, text=True)
    return ["--insecure"] if "--insecure" in r.stdout + r.stderr else []


class Fleetctl:
    def __init__(self, path, controller):
        self.path = path
        self.controller = controller
        self.insecure = insecure_flag(path)

    def run(self, *args, timeout=600):
        cmd = [self.path, "--controller", self.controller, "-o", "json",
               "--timeout", "300s", *self.insecure, *args]
        r = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return json.loads(r.stdout) if r.stdout.strip() else {}


class Controller:
    def __init__(self, h, name):
        self.h = h
        self.data = os.path.join(h.work, name)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = os.path.join(h.work, name + ".log")
        self.proc = None
        self.http_port = None  # None: HTTP off
        # Extra flags, each passed only if this controller binary has it.
        self.optional_flags = []
        self.ctl = Fleetctl(h.bin("fleetctl"), self.address)

    def start(self):
        binary = self.h.bin("fleet-controller")
        extra = [a for flag in self.optional_flags
                 if has_flag(binary, flag[0]) for a in flag]
        self.proc = spawn([binary, *insecure_flag(binary), *extra,
                           "--data-dir",
                           self.data, "--listen", self.address,
                           "--http-listen",
                           f"127.0.0.1:{self.http_port}" if self.http_port
                           else "", "--trust-key",
                           self.h.pub_key, "--log-level", "warning"],
                          self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited, see {self.log}")
            try:
                self.ctl.run("release", "list", timeout=10)
                return self
            except (RuntimeError, subprocess.TimeoutExpired):
                time.sleep(0.05)
        raise RuntimeError(f"controller did not answer, see {self.log}")

    def stop(self):
        if self.proc:
            stop(self.proc)

    @property
    def pid(self):
        return self.proc.pid

    def push(self, version, path, product="app"):
        return self.ctl.run("release", "push", "--product", product,
                            "--version", version, "--file", path, "--key",
                            self.h.priv_key, "--expires", "never")

    def rollout(self, rollout_id):
        for r in self.ctl.run("rollout", "list").get("rollouts", []):
            if r.get("rollout_id") == rollout_id:
                return r
        raise RuntimeError(f"rollout {rollout_id} not listed")

    def wait_rollout(self, rollout_id, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.rollout(rollout_id)
            state = r.get("state", "")
            if "COMPLETED" in state or "ABORTED" in state or "PAUSED" in state:
                return r
            time.sleep(0.25)
        raise RuntimeError(f"rollout {rollout_id} not done in {timeout}s: {r}")


class Simulator:
    """bench/agent_simulator driven over stdin/stdout."""

    def __init__(self, h, controller, prefix, extra=()):
        self.log = os.path.join(h.work, f"sim-{prefix}.log")
        self.proc = spawn([h.bin("agent_simulator"), "--controller",
                           controller, "--id-prefix", prefix,
                           "--installed-version", "1.0.0", "--stats-ms",
                           "250", *extra], self.log, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)
        self.stats = {}
        self.replies = queue.Queue()
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if "stats" in msg:
                with self.cv:
                    self.stats = msg
                    self.cv.notify_all()
            elif "ok" in msg or "error" in msg:
                self.replies.put(msg)

    def cmd(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        reply = self.replies.get(timeout=60)
        if "error" in reply:
            raise RuntimeError(f"simulator: {reply['error']}")
        return reply

    def wait(self, pred, timeout, what):
        deadline = time.time() + timeout
        with self.cv:
            while not (self.stats and pred(self.stats)):
                left = deadline - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"simulator: {what} not reached in "
                                       f"{timeout}s: {self.stats}")
                self.cv.wait(min(left, 1))
            return dict(self.stats)

    def snapshot(self):
        with self.cv:
            return dict(self.stats)

    def stop(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        stop(self.proc, timeout=30)


class Harness:
    def __init__(self, args):
        self.args = args
        self.size = SIZES[args.mode]
        self.work = args.work
        self.figures = {}   # name -> dict of values (written to the report)
        self.notes = {}     # name -> text on what limits the figure
        self.errors = {}    # name -> why it could not be measured
        self.date = f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC"

    def bin(self, name):
        return os.path.join(self.args.bin_dir, name)

    # ------------------------------------------------------------ helpers
    def keys(self):
        d = os.path.join(self.work, "keys")
        subprocess.run([self.bin("fleetctl"), "keys", "generate", "--out", d],
                       check=True, capture_output=True)
        self.priv_key = os.path.join(d, "release.key")
        self.pub_key = os.path.join(d, "release.pub")

    def sample_app(self, version, path):
        subprocess.run(["sh", self.args.sample_app, version, path], check=True,
                       capture_output=True)
        return path

    def figure(self, name, fn):
        log("figure:", name)
        start = time.time()
        try:
            fn()
        except Exception as e:  # report, and go on with the other figures
            self.errors[name] = f"{type(e).__name__}: {e}"
            log("  failed:", self.errors[name])
            end_children()
        log(f"  {name} took {time.time() - start:.1f}s:",
            json.dumps(self.figures.get(name, {}))[:400])

    # ------------------------------------------------ connected / fan-out
    def fleet_figures(self):
        """Ramp, fan-out, 4-stage rollout and reconnect storm share one
        controller and one simulator: connecting 10k agents takes a while."""
        s = self.size
        c = Controller(self, "fleet").start()
        time.sleep(s["settle_s"] / 2)
        base_rss = proc_rss_kib(c.pid)
        sim = Simulator(self, c.address, "sim", ["--phase-delay-ms", "10"])
        try:
            self.ramp(c, sim, base_rss, s["ramp"], "connected")
            self.fanout(c, sim)
            self.staged(c, sim)
            self.storm(c, sim)
            self.ramp(c, sim, base_rss, s["beyond"], "connected_beyond",
                      tolerate=True)
        finally:
            sim.stop()
            c.stop()

    def rollout_figures(self):
        """Fan-out and 4-stage rollout alone (ONLY=rollout): the fleet is
        connected in one step, without the ramp and the storm, for measuring
        the rollout path before and after a change."""
        s = self.size
        c = Controller(self, "rollout").start()
        sim = Simulator(self, c.address, "sim", ["--phase-delay-ms", "10"])
        try:
            n = s["fleet"]
            sim.cmd(f"add {n} {s['connect_rate']}")
            sim.wait(lambda st: st["connected"] >= n,
                     60 + n / s["connect_rate"] * 3, f"{n} connected")
            time.sleep(s["settle_s"])
            self.fanout(c, sim)
            self.staged(c, sim)
        finally:
            sim.stop()
            c.stop()

    def ramp(self, c, sim, base_rss, steps, name, tolerate=False):
        s = self.size
        rows = self.figures.setdefault(name, {"baseline_rss_kib": base_rss,
                                              "steps": []})
        for n in steps:
            have = sim.snapshot().get("agents", 0)
            sim.cmd(f"add {n - have} {s['connect_rate']}")
            try:
                sim.wait(lambda st: st["connected"] >= n,
                         60 + n / s["connect_rate"] * 3, f"{n} connected")
            except RuntimeError as e:
                if not tolerate:
                    raise
                rows["stopped"] = f"did not hold {n}: {e}"[:300]
                # Step back: the rest of the run should not see a half ramp.
                return
            time.sleep(s["settle_s"])
            cpu0, sim_cpu0, t0 = proc_cpu_s(c.pid), sim.snapshot()["cpu_s"], \
                time.time()
            time.sleep(s["idle_window_s"])
            st = sim.snapshot()
            wall = time.time() - t0
            rss = proc_rss_kib(c.pid)
            rows["steps"].append({
                "agents": n, "connected": st["connected"],
                "controller_rss_kib": rss,
                "rss_per_agent_kib": round((rss - base_rss) / n, 1),
                "controller_idle_cpu_pct":
                    round(100 * (proc_cpu_s(c.pid) - cpu0) / wall, 2),
                "sim_cpu_pct": round(100 * (st["cpu_s"] - sim_cpu0) / wall, 2),
                "sim_rss_kib": st["rss_kib"],
            })
            log("  ", rows["steps"][-1])

    def fanout(self, c, sim):
        n = self.size["fleet"]
        artifact = self.sample_app("1.1.0", os.path.join(self.work, "app-1.1"))
        c.push("1.1.0", artifact)
        sim.cmd("reset")
        before = sim.snapshot()
        t0 = time.time()
        r = c.ctl.run("rollout", "create", "--product", "app", "--version",
                      "1.1.0")
        t_created = time.time()
        sim.wait(lambda st: st["directives"] - before["directives"] >= n, 120,
                 "every agent directed")
        receipts = os.path.join(self.work, "receipts.txt")
        sim.cmd(f"receipts {receipts}")
        lat = []
        with open(receipts) as f:
            for line in f:
                _, micros, _ = line.split()
                lat.append(int(micros) / 1e6 - t0)
        done = c.wait_rollout(r["rollout_id"], 600)
        self.figures["fanout"] = {
            "agents": n, "received": len(lat),
            "create_rpc_s": round(t_created - t0, 3),
            "p50_s": round(percentile(lat, 50), 3),
            "p99_s": round(percentile(lat, 99), 3),
            "max_s": round(max(lat), 3),
            "rollout_state": done.get("state"),
            "rollout_done_s": round(
                (int(done["updated_unix_ms"]) - int(done["created_unix_ms"]))
                / 1000, 2),
        }

    def staged(self, c, sim):
        n = self.size["fleet"]
        artifact = self.sample_app("1.2.0", os.path.join(self.work, "app-1.2"))
        c.push("1.2.0", artifact)
        before = sim.snapshot()
        t0 = time.time()
        r = c.ctl.run("rollout", "create", "--product", "app", "--version",
                      "1.2.0", "--stages", "1,10,50,100")
        done = c.wait_rollout(r["rollout_id"], 900)
        after = sim.snapshot()
        self.figures["rollout_4_stage"] = {
            "agents": n, "state": done.get("state"),
            "completed_s": round(
                (int(done["updated_unix_ms"]) - int(done["created_unix_ms"]))
                / 1000, 2),
            "observed_s": round(time.time() - t0, 2),
            "healthy": after["healthy"] - before["healthy"],
            "events_acked": after["events_acked"] - before["events_acked"],
            "counts": done.get("counts"),
        }

    def storm(self, c, sim):
        n = self.size["fleet"]
        before = sim.snapshot()
        t_stop = time.time()
        stop(c.proc, timeout=60)
        t_down = time.time()
        time.sleep(0.3)  # one stats line later: how the old streams ended
        at_shutdown = sim.snapshot().get("stream_ends", {})
        c.start()
        t_up = time.time()
        peak = 0.0
        last_cpu, last_t = proc_cpu_s(c.pid), time.time()
        deadline = time.time() + 600
        st = sim.snapshot()
        while time.time() < deadline:
            time.sleep(0.25)
            cpu, t = proc_cpu_s(c.pid), time.time()
            peak = max(peak, 100 * (cpu - last_cpu) / (t - last_t))
            last_cpu, last_t = cpu, t
            st = sim.snapshot()
            if (st["connected"] >= n and
                    st["welcomes"] - before["welcomes"] >= n):
                break
        t_all = time.time()
        ends = {k: v - before.get("stream_ends", {}).get(k, 0)
                for k, v in st.get("stream_ends", {}).items()}
        ends = {k: v for k, v in ends.items() if v}
        shutdown_ends = {
            k: v - before.get("stream_ends", {}).get(k, 0)
            for k, v in at_shutdown.items()
            if v - before.get("stream_ends", {}).get(k, 0)}
        self.figures["reconnect_storm"] = {
            "agents": n, "reconnected": st["connected"],
            "controller_stop_s": round(t_down - t_stop, 2),
            "restart_to_answering_s": round(t_up - t_down, 2),
            "all_reconnected_after_restart_s": round(t_all - t_down, 2),
            "peak_controller_cpu_pct": round(peak, 1),
            "stream_ends": ends,
            "stream_ends_by_old_controller_exit": shutdown_ends,
            "first_end_messages": st.get("end_messages", {}),
            "errors_beyond_unavailable": sum(
                v for k, v in ends.items() if k != "UNAVAILABLE"),
        }

    # --------------------------------------------------- artifact serving
    def artifact(self):
        s = self.size
        path = os.path.join(self.work, "www", "artifact.bin")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            for _ in range(s["artifact_mib"]):
                f.write(os.urandom(1 << 20))
        size = os.path.getsize(path)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        self.big_file = path
        c = Controller(self, "serve").start()
        nginx = None
        try:
            c.push("2.0.0", path, product="big")
            port = free_port()
            prefix = os.path.join(self.work, "nginx")
            os.makedirs(prefix, exist_ok=True)
            conf = os.path.join(prefix, "nginx.conf")
            # Run as root, nginx hands requests to workers running as
            # "nobody", who cannot read a scratch dir under /root.
            user = "user root root;\n" if os.geteuid() == 0 else ""
            with open(conf, "w") as f:
                f.write(user + f"""daemon off;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {os.path.dirname(path)};
  }}
}}
""")
            nginx = spawn(["/usr/sbin/nginx", "-p", prefix, "-c", conf, "-e",
                           os.path.join(prefix, "error.log")],
                          os.path.join(prefix, "stderr.log"))
            url = f"http://127.0.0.1:{port}/artifact.bin"
            deadline = time.time() + 10
            while subprocess.run(["curl", "-sf", "-o", "/dev/null", "-r",
                                  "0-0", url]).returncode != 0:
                if time.time() > deadline or nginx.poll() is not None:
                    err = open(os.path.join(prefix, "error.log")).read()
                    raise RuntimeError(f"nginx did not serve: {err[-500:]}")
                time.sleep(0.1)
            rows = []
            for n in s["concurrency"]:
                grpc_best, nginx_best = 0.0, 0.0
                for _ in range(2):
                    r = subprocess.run(
                        [self.bin("fetch_bench"), "--controller", c.address,
                         "--sha256", digest, "--size", str(size),
                         "--concurrency", str(n),
                         # For experiments with flow control windows.
                         *(["--window-bytes", os.environ["FETCH_WINDOW_BYTES"]]
                           if os.environ.get("FETCH_WINDOW_BYTES") else [])],
                        capture_output=True, text=True, timeout=600)
                    if r.returncode != 0:
                        raise RuntimeError("fetch_bench: " + r.stdout +
                                           r.stderr)
                    grpc_best = max(grpc_best, json.loads(r.stdout)["mb_per_s"])
                    t0 = time.time()
                    curls = [subprocess.Popen(
                        ["curl", "-sf", "-o", "/dev/null", "-w",
                         "%{size_download}", url], stdout=subprocess.PIPE)
                        for _ in range(n)]
                    got = [int(p.communicate()[0] or 0) for p in curls]
                    elapsed = time.time() - t0
                    if any(g != size for g in got):
                        raise RuntimeError(f"curl got {got[:4]}... of {size}")
                    nginx_best = max(nginx_best, n * size / elapsed / 1e6)
                rows.append({"concurrency": n,
                             "fetchartifact_mb_s": round(grpc_best, 1),
                             "nginx_mb_s": round(nginx_best, 1),
                             "ratio": round(grpc_best / nginx_best, 3)})
                log("  ", rows[-1])
            self.figures["artifact_serving"] = {"bytes": size, "rows": rows}
        finally:
            if nginx:
                stop(nginx, signal.SIGQUIT)
            c.stop()

    def verification(self):
        path = getattr(self, "big_file", None)
        if not path or not os.path.exists(path):
            path = os.path.join(self.work, "verify.bin")
            with open(path, "wb") as f:
                for _ in range(self.size["artifact_mib"]):
                    f.write(os.urandom(1 << 20))
        r = subprocess.run([self.bin("verify_bench"), "--file", path, "--key",
                            self.priv_key, "--trust-key", self.pub_key,
                            "--repeat", "5"], capture_output=True, text=True,
                           check=True)
        ours = json.loads(r.stdout)
        times = []
        for _ in range(5):
            t0 = time.time()
            o = subprocess.run(["openssl", "dgst", "-sha256", path],
                               capture_output=True, text=True, check=True)
            times.append(time.time() - t0)
        if ours["sha256"] not in o.stdout:
            raise RuntimeError("openssl and verify_bench disagree on sha256")
        best = min(times)
        self.figures["verification"] = {
            "bytes": ours["bytes"], "agent_check_s": ours["best_s"],
            "agent_gb_s": ours["best_gb_per_s"], "openssl_s": round(best, 4),
            "openssl_gb_s": round(ours["bytes"] / best / 1e9, 3),
            "ratio": round(best / ours["best_s"], 3),
        }

    # ------------------------------------------------------------ telemetry
    def telemetry(self):
        """Ingest through the real stream path. Agents that batch (several
        queued events in one AgentMessage.events, as Welcome allows) give
        the headline figure; the same load with one event per message (an
        agent that predates batches) is measured beside it."""
        sim_bin = self.bin("agent_simulator")
        batches = has_flag(sim_bin, "--single-events")
        # INGEST_MESSAGES=single measures only one event per message (for
        # back-to-back comparisons with a simulator that predates batches).
        only_single = os.environ.get("INGEST_MESSAGES") == "single"
        first = self.ingest_run(
            "telemetry", ["--single-events"] if batches and only_single
            else [])
        self.figures["telemetry_ingest"] = dict(
            first, message="batched" if batches and not only_single
            else "one event each")
        if batches and not only_single:
            self.figures["telemetry_ingest_single"] = dict(
                self.ingest_run("telemetry-single", ["--single-events"]),
                message="one event each")
        # Peer: the same rows, inserted by the sqlite3 CLI in one transaction
        # into an empty copy of the schema (indexes included).
        db = first.pop("db")
        self.figures.get("telemetry_ingest_single", {}).pop("db", None)
        self.figures["telemetry_ingest"].pop("db", None)
        stored = int(subprocess.run(["sqlite3", db, "SELECT count(*) FROM "
                                     "events"], capture_output=True,
                                    text=True, check=True).stdout)
        schema = subprocess.run(["sqlite3", db, ".schema events"],
                                capture_output=True, text=True,
                                check=True).stdout
        dump = os.path.join(self.work, "events.sql")
        with open(dump, "w") as f:
            f.write("PRAGMA journal_mode=WAL;\nBEGIN;\n")
            f.flush()
            subprocess.run(["sqlite3", db, ".mode insert events",
                            "SELECT * FROM events"], stdout=f, check=True)
            f.write("COMMIT;\n")
        peer_db = os.path.join(self.work, "peer.db")
        subprocess.run(["sqlite3", peer_db], input=schema, text=True,
                       check=True)
        t0 = time.time()
        subprocess.run(["sqlite3", peer_db], stdin=open(dump),
                       stdout=subprocess.DEVNULL, check=True)
        peer_rate = stored / (time.time() - t0)
        for name in ("telemetry_ingest", "telemetry_ingest_single"):
            t = self.figures.get(name)
            if t is None:
                continue
            t["stored_rows"] = stored if name == "telemetry_ingest" \
                else t.get("stored_rows")
            t["sqlite3_cli_rows_per_s"] = round(peer_rate)
            t["ratio"] = round(t["events_per_s"] / peer_rate, 3)

    def ingest_run(self, name, sim_extra):
        s = self.size
        c = Controller(self, name)
        # The figure is the event path's capacity: the per-stream flood
        # limit (50 messages/s per agent by default) would measure the
        # limit instead, since each simulated agent floods 512 at a time.
        c.optional_flags = [("--agent-rate-limit", "0")]
        c.start()
        sim = Simulator(self, c.address, name,
                        ["--flood-window", "512", *sim_extra])
        try:
            n, k = s["tele_agents"], s["tele_events"]
            sim.cmd(f"add {n} {s['connect_rate']}")
            sim.wait(lambda st: st["connected"] >= n, 120, "connected")
            before = sim.snapshot()
            cpu0 = proc_cpu_s(c.pid)
            t0 = time.time()
            sim.cmd(f"flood {k}")
            st = sim.wait(lambda st: st["events_acked"] - before["events_acked"]
                          >= n * k, 1800, "flood acked")
            elapsed = time.time() - t0
            ctl_cpu = proc_cpu_s(c.pid) - cpu0
            total = n * k
        finally:
            sim.stop()
            c.stop()
        db = os.path.join(c.data, "fleet.db")
        stored = int(subprocess.run(["sqlite3", db, "SELECT count(*) FROM "
                                     "events"], capture_output=True,
                                    text=True, check=True).stdout)
        # Every event reached telemetry.db too (handed over by the control
        # loop or read back from fleet.db), once.
        tele = int(subprocess.run(
            ["sqlite3", os.path.join(c.data, "telemetry.db"),
             "SELECT count(*) FROM update_events"], capture_output=True,
            text=True, check=True).stdout)
        return {
            "agents": n, "events": total, "stored_rows": stored,
            "telemetry_rows": tele, "db": db,
            "seconds": round(elapsed, 2), "events_per_s": round(total / elapsed),
            "controller_cpu_pct": round(100 * ctl_cpu / elapsed, 1),
            "sim_cpu_s": round(st["cpu_s"] - before["cpu_s"], 1),
        }

    def telemetry_query(self):
        """Query latency of the telemetry store (helper B's query engine,
        served at /api/v1/query) over query_events stored update events:
        count by version, 1 h range, 1 m step. The events are bulk-inserted
        into the controller's telemetry.db while it is stopped (ingest speed
        is the ingest figure's business), in two layouts: spread over 24 h
        (the window holds 1/24 of them) and all inside the window."""
        n = self.size["query_events"]
        c = Controller(self, "query")
        c.http_port = free_port()
        c.start()
        c.stop()
        db = os.path.join(c.data, "telemetry.db")
        tables = subprocess.run(["sqlite3", db, ".tables"], capture_output=True,
                                text=True, check=True).stdout.split()
        if "update_events" not in tables:
            self.figures["telemetry_query"] = {
                "status": "not measured: this controller has no telemetry "
                          "store (update_events in telemetry.db)"}
            return
        now_ms = int(time.time() * 1000)
        minute_ms = now_ms - now_ms % 60_000
        # Rollups (where this controller keeps them) follow inserts only.
        clear_rollups = ("DELETE FROM update_events_1m;"
                         if "update_events_1m" in tables else "")
        rows = {}
        for layout, span_ms in (("24h", 24 * 3600_000), ("1h", 3600_000)):
            subprocess.run(["sqlite3", db], text=True, check=True,
                           stdout=subprocess.DEVNULL, input=f"""
PRAGMA journal_mode=WAL;
DELETE FROM update_events;
{clear_rollups}
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
INSERT INTO update_events(agent_id, seq, rollout_id, product, platform,
  from_version, to_version, phase, error_class, duration_ms, bytes, time_ms,
  received_ms)
SELECT 'q-' || (i % 10000), i, 'ro-bench', 'app', 'linux/amd64', '1.0.0',
  CASE i % 3 WHEN 0 THEN '1.1.0' WHEN 1 THEN '1.2.0' ELSE '1.3.0' END,
  CASE i % 8 WHEN 0 THEN 'healthy' ELSE 'downloading' END, '', i % 1000, 0,
  {now_ms} - {span_ms} + (i * {span_ms} / {n}),
  {now_ms} - {span_ms} + (i * {span_ms} / {n})
FROM n;
""")
            c.start()
            # Whole minutes (as a dashboard at a 1 m step asks) may be
            # answered from minute rollups; a window 1 ms off the minute
            # must read the raw events.
            for window, end_ms, repeat in (("whole minutes", minute_ms, 5),
                                           ("unaligned", now_ms, 3)):
                self.query_rows(c, rows, f"{layout}, {window}", layout, n,
                                span_ms, end_ms, repeat)
            c.stop()
        self.figures["telemetry_query"] = {"rows": rows}

    def query_rows(self, c, rows, key, layout, n, span_ms, end_ms, repeat):
        try:
            url = (f"http://127.0.0.1:{c.http_port}/api/v1/query?query="
                   f"count(update_events)%20by%20(version)"
                   f"&from={end_ms - 3600_000}&to={end_ms}&step=1m")
            times, body, refused = [], "", ""
            for _ in range(repeat):
                t0 = time.time()
                r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}",
                                    url], capture_output=True, text=True)
                times.append(time.time() - t0)
                body, _, code = r.stdout.rpartition("\n")
                if code != "200":
                    # The engine bounds the rows a query may read: an
                    # answer too, and its latency is measured.
                    refused = f"HTTP {code}: {body[:200]}"
        except Exception:
            c.stop()
            raise
        rows[key] = {
            "events_stored": n, "events_in_window":
                n if layout == "1h" else n * 3600_000 // span_ms,
            "best_ms": round(min(times) * 1000, 1),
            "median_ms": round(statistics.median(times) * 1000, 1),
            "response_bytes": len(body)}
        if refused:
            rows[key]["refused"] = refused
        log("  ", key, rows[key])

    # ------------------------------------------------------- real agent
    def real_agent(self):
        s = self.size
        c = Controller(self, "agent").start()
        d = os.path.join(self.work, "agent1")
        os.makedirs(os.path.join(d, "bin"), exist_ok=True)
        status = os.path.join(d, "status")
        v1 = self.sample_app("3.0.0", os.path.join(self.work, "app-3.0"))
        v2 = self.sample_app("3.1.0", os.path.join(self.work, "app-3.1"))
        env = dict(os.environ, FLEET_SAMPLE_STATUS=status)
        agent = spawn([self.bin("fleet-agent"),
                       *insecure_flag(self.bin("fleet-agent")),
                       "--controller", c.address,
                       "--state-dir", os.path.join(d, "state"), "--trust-key",
                       self.pub_key, "--product", "app", "--exec",
                       os.path.join(d, "bin", "app"), "--agent-id", "real-1",
                       "--health-seconds", "1", "--log-level", "warning"],
                      os.path.join(d, "agent.log"), env=env)
        try:
            c.push("3.0.0", v1)
            r = c.ctl.run("rollout", "create", "--product", "app", "--version",
                          "3.0.0")
            done = c.wait_rollout(r["rollout_id"], 120)
            if "COMPLETED" not in done["state"]:
                raise RuntimeError(f"first install: {done}")
            # Footprint: idle, connected, program running. The agent is two
            # processes: the supervisor (the pid started here) and its
            # worker (STATE/worker.pid: "PID START_TICKS"); both count.
            time.sleep(2)
            with open(os.path.join(d, "state", "worker.pid")) as f:
                worker = int(f.read().split()[0])
            pids = {"supervisor": agent.pid, "worker": worker}
            rss = {name: [] for name in pids}
            cpu0 = {name: proc_cpu_s(pid) for name, pid in pids.items()}
            t0 = time.time()
            while time.time() - t0 < s["footprint_s"]:
                for name, pid in pids.items():
                    rss[name].append(proc_rss_kib(pid))
                time.sleep(1)
            wall = time.time() - t0
            total = [a + b for a, b in zip(rss["supervisor"], rss["worker"])]
            self.figures["agent_footprint"] = {
                "window_s": round(wall, 1), "rss_max_kib": max(total),
                "rss_mean_kib": round(statistics.mean(total)),
                "supervisor_rss_max_kib": max(rss["supervisor"]),
                "worker_rss_max_kib": max(rss["worker"]),
                "cpu_pct": round(100 * sum(
                    proc_cpu_s(pid) - cpu0[name]
                    for name, pid in pids.items()) / wall, 3),
            }
            self.swap(c, status, v2)
        finally:
            stop(agent)
            c.stop()

    def swap(self, c, status, v2):
        def read_status():
            try:
                with open(status) as f:
                    version, pid = f.read().split()
                    return version, int(pid)
            except (OSError, ValueError):
                return None, None

        def alive(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False

        version, old_pid = read_status()
        if version != "3.0.0" or not alive(old_pid):
            raise RuntimeError(f"program not running 3.0.0: {version}")
        c.push("3.1.0", v2)
        c.ctl.run("rollout", "create", "--product", "app", "--version",
                  "3.1.0")
        t_exit = t_up = None
        deadline = time.time() + 60
        while time.time() < deadline and t_up is None:
            now = time.time()
            if t_exit is None and not alive(old_pid):
                t_exit = now
            if t_exit is not None:
                v, pid = read_status()
                if v == "3.1.0" and pid != old_pid and alive(pid):
                    t_up = now
            time.sleep(0.0005)
        if t_up is None:
            raise RuntimeError("new version never came up")
        # Peer: the floor of any restart, starting the same program by hand
        # until it has written its status.
        floors = []
        for i in range(5):
            st = os.path.join(self.work, f"floor-status-{i}")
            t0 = time.time()
            # No preexec_fn: Python then uses vfork, as cheap as it gets here.
            p = subprocess.Popen(["sh", v2, st])
            _children.append(p)
            while not os.path.exists(st):
                time.sleep(0.0005)
            floors.append(time.time() - t0)
            stop(p)
        floor = statistics.median(floors)
        self.figures["swap_downtime"] = {
            "downtime_ms": round((t_up - t_exit) * 1000, 1),
            "start_floor_ms": round(floor * 1000, 1),
            "ratio": round((t_up - t_exit) / floor, 2),
        }

    # ------------------------------------------------------------- report
    def write(self):
        a = self.args
        f = self.figures
        lines = [
            "# fleet benchmark results", "",
            f"- command: `{a.command}`",
            f"- mode: {a.mode}",
            f"- date: {self.date}",
            f"- commit: {a.commit}",
            f"- machine: {os.cpu_count()} cores ({cpu_model()}), "
            f"{mem_gib():.0f} GiB RAM, {platform.platform()}",
            f"- build: `bazel build -c opt`; the simulator runs on the same "
            f"cores as the controller (its own CPU is shown apart)",
            "",
            "Every figure is beside its peer or limit measured in this run, "
            "as a ratio. Goals are from issue #7.",
            "",
            "| figure | measured | peer / limit | ratio | goal |",
            "| --- | --- | --- | --- | --- |",
        ]

        def row(*cells):
            lines.append("| " + " | ".join(str(x) for x in cells) + " |")

        for name in ("connected", "connected_beyond"):
            for st in f.get(name, {}).get("steps", []):
                row(f"connected agents held: {st['agents']}",
                    f"{st['rss_per_agent_kib']} KiB RSS/agent "
                    f"(controller {st['controller_rss_kib'] // 1024} MiB), "
                    f"idle CPU {st['controller_idle_cpu_pct']} %",
                    "50 KiB/agent", f"{st['rss_per_agent_kib'] / 50:.2f}×",
                    "10k at ≤ 50 KiB")
            if f.get(name, {}).get("stopped"):
                row(f"connected agents held ({name})",
                    f.get(name)["stopped"], "", "", "")
        fo = f.get("fanout")
        if fo:
            row(f"directive fan-out to {fo['agents']} agents",
                f"p50 {fo['p50_s']} s, p99 {fo['p99_s']} s, "
                f"max {fo['max_s']} s ({fo['received']} received)",
                "1 s", f"{fo['max_s'] / 1.0:.2f}×", "< 1 s")
        ro = f.get("rollout_4_stage")
        if ro:
            row(f"4-stage rollout (1/10/50/100 %) over {ro['agents']} agents",
                f"{ro['completed_s']} s to {ro['state']}", "60 s",
                f"{ro['completed_s'] / 60:.2f}×", "< 60 s")
        rs = f.get("reconnect_storm")
        if rs:
            row(f"reconnect storm, {rs['agents']} agents",
                f"all back {rs['all_reconnected_after_restart_s']} s after "
                f"restart; peak controller CPU {rs['peak_controller_cpu_pct']}"
                f" %; errors beyond UNAVAILABLE: "
                f"{rs['errors_beyond_unavailable']}",
                "backoff cap 30 s (full jitter)",
                f"{rs['all_reconnected_after_restart_s'] / 30:.2f}×", "—")
        for r in f.get("artifact_serving", {}).get("rows", []):
            row(f"artifact serving, {r['concurrency']} concurrent, "
                f"{f['artifact_serving']['bytes'] >> 20} MiB",
                f"FetchArtifact {r['fetchartifact_mb_s']} MB/s",
                f"nginx sendfile {r['nginx_mb_s']} MB/s", f"{r['ratio']}×",
                "≥ 1.0×")
        v = f.get("verification")
        if v:
            row(f"verification, {v['bytes'] >> 20} MiB",
                f"sha256 + signature {v['agent_check_s']} s "
                f"({v['agent_gb_s']} GB/s)",
                f"openssl dgst -sha256 {v['openssl_s']} s "
                f"({v['openssl_gb_s']} GB/s)", f"{v['ratio']}×", "≥ 0.9×")
        for key in ("telemetry_ingest", "telemetry_ingest_single"):
            t = f.get(key)
            if not t:
                continue
            how = f", {t['message']}" if t.get("message") else ""
            row(f"telemetry ingest, {t['agents']} agents × "
                f"{t['events'] // t['agents']} events{how}",
                f"{t['events_per_s']} events/s (controller CPU "
                f"{t['controller_cpu_pct']} %, simulator "
                f"{t.get('sim_cpu_s', '?')} CPU s)",
                f"sqlite3 CLI one transaction {t['sqlite3_cli_rows_per_s']} "
                f"rows/s", f"{t['ratio']}×", "≥ 100k events/s")
        q = f.get("telemetry_query")
        if q and "rows" in q:
            for layout, r in q["rows"].items():
                row(f"telemetry query `count(update_events) by (version)`, "
                    f"1 h range, 1 m step, {r['events_stored']:,} events "
                    f"stored ({layout}: {r['events_in_window']:,} in the "
                    f"window)", ("refused: " + r["refused"] + "; "
                                 if r.get("refused") else "") +
                    f"{r['best_ms']} ms best, {r['median_ms']} ms "
                    f"median (HTTP /api/v1/query, curl)", "100 ms",
                    f"{r['best_ms'] / 100:.2f}×", "< 100 ms")
        elif q:
            row("telemetry query, 1 h range, 1 m step, by version",
                q.get("status", q), "100 ms", "—", "< 100 ms")
        af = f.get("agent_footprint")
        if af:
            split = ""
            if "worker_rss_max_kib" in af:
                split = (f" (supervisor "
                         f"{af['supervisor_rss_max_kib'] / 1024:.1f} + worker "
                         f"{af['worker_rss_max_kib'] / 1024:.1f})")
            row(f"agent footprint, idle {af['window_s']} s",
                f"RSS max {af['rss_max_kib'] / 1024:.1f} MiB{split}, CPU "
                f"{af['cpu_pct']} %", "10 MiB",
                f"{af['rss_max_kib'] / 10240:.2f}×", "≤ 10 MiB, ~0 CPU")
        sw = f.get("swap_downtime")
        if sw:
            row("swap downtime (old exit → new up, external prober)",
                f"{sw['downtime_ms']} ms",
                f"start of the same program by hand {sw['start_floor_ms']} ms",
                f"{sw['ratio']}×", "—")
        if self.errors:
            lines += ["", "## Not measured in this run", ""]
            for k, e in self.errors.items():
                lines.append(f"- {k}: {e}")
        lines += ["", "## Raw figures", "", "```json",
                  json.dumps(f, indent=1, sort_keys=True), "```", ""]
        notes = self.args.notes
        if notes and os.path.exists(notes):
            lines += [open(notes).read()]
        with open(a.out, "w") as out:
            out.write("\n".join(lines))
        with open(a.out + ".json", "w") as out:
            json.dump({"figures": f, "errors": self.errors, "date": self.date,
                       "mode": a.mode, "commit": a.commit,
                       "command": a.command}, out, indent=1)


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def mem_gib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            return int(line.split()[1]) / (1 << 20)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=sorted(SIZES), default="quick")
    p.add_argument("--bin-dir",
                   help="directory with fleet-controller, fleet-agent, "
                        "fleetctl, agent_simulator, fetch_bench, verify_bench")
    p.add_argument("--sample-app",
                   help="deploy/sample-app/make-sample-app.sh")
    p.add_argument("--out", required=True, help="report (Markdown)")
    p.add_argument("--work", help="scratch dir (default: a new temp dir)")
    p.add_argument("--commit", default="?")
    p.add_argument("--command", default="bench/run.sh")
    p.add_argument("--notes", help="Markdown appended to the report")
    p.add_argument("--only", help="comma list: fleet,artifact,verify,"
                                  "telemetry,query,agent; rollout (fan-out "
                                  "and 4-stage without ramp and storm)")
    p.add_argument("--from-json", help="rewrite the report from the figures "
                                       "of an earlier run (OUT.json)")
    args = p.parse_args()
    if args.from_json:
        old = json.load(open(args.from_json))
        args.mode = old.get("mode", args.mode)
        args.commit = old.get("commit", args.commit)
        args.command = old.get("command", args.command)
        args.work = tempfile.gettempdir()
        h = Harness(args)
        h.figures, h.errors = old["figures"], old["errors"]
        h.date = old.get("date", "?")
        h.write()
        return 0
    if not args.bin_dir or not args.sample_app:
        p.error("--bin-dir and --sample-app are needed to run figures")
    own_work = args.work is None
    args.work = args.work or tempfile.mkdtemp(prefix="fleet-bench-")
    os.makedirs(args.work, exist_ok=True)
    atexit.register(end_children)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    raise_nofile()

    h = Harness(args)
    h.keys()
    only = set(args.only.split(",")) if args.only else None
    if only and "ingest" in only:  # the figure's name in the issue
        only.add("telemetry")
    plan = [("fleet", h.fleet_figures), ("rollout", h.rollout_figures),
            ("artifact", h.artifact),
            ("verify", h.verification), ("telemetry", h.telemetry),
            ("query", h.telemetry_query),
            ("agent", h.real_agent)]
    for name, fn in plan:
        # "rollout" measures a part of "fleet": only when asked for by name.
        if (only is None and name != "rollout") or (only and name in only):
            h.figure(name, fn)
    end_children()
    h.write()
    log("wrote", args.out)
    if own_work and not os.environ.get("KEEP"):
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
