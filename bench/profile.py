#!/usr/bin/env python3
"""Profiles the controller under valgrind --tool=callgrind for one figure.

  profile.py fanout|ingest --bin-dir DIR --sample-app PATH [--agents N]
             [--events K] [--out DIR]

ingest: N agents connect, then instrumentation is on while each sends K
UpdateEvents through its stream (flood) until all are acked.
fanout: connects N simulated agents to a controller running under callgrind
with instrumentation off, turns it on (callgrind_control -i on) just before
`rollout create` (1 stage, 100 %), off again once every agent has its
directive, and
prints the top inclusive costs (callgrind_annotate). callgrind runs the
controller ~50x slower, so N is small; the shape of the costs is what counts.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness: Controller, Simulator, spawn)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("figure", choices=["fanout", "ingest"])
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--sample-app", required=True)
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--events", type=int, default=100)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    work = a.out or tempfile.mkdtemp(prefix="fleet-profile-")
    os.makedirs(work, exist_ok=True)
    args = argparse.Namespace(mode="quick", bin_dir=a.bin_dir,
                              sample_app=a.sample_app, work=work)
    h = run.Harness(args)
    h.keys()
    out_file = os.path.join(work, "callgrind.out")
    c = run.Controller(h, "controller")
    real_bin = h.bin("fleet-controller")
    wrapper = os.path.join(work, "fleet-controller")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no"
                f" --callgrind-out-file={out_file} {real_bin} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    h.bin = lambda name: wrapper if name == "fleet-controller" else \
        os.path.join(a.bin_dir, name)
    try:
        c.start()
        sim = run.Simulator(h, c.address, "prof", ["--phase-delay-ms", "10"])
        sim.cmd(f"add {a.agents} 100")
        sim.wait(lambda st: st["connected"] >= a.agents, 600, "connected")
        if a.figure == "ingest":
            subprocess.run(["callgrind_control", "-i", "on", str(c.pid)],
                           check=True, capture_output=True)
            t0 = time.time()
            sim.cmd(f"flood {a.events}")
            sim.wait(lambda st: st["events_acked"] >= a.agents * a.events, 900,
                     "acked")
            subprocess.run(["callgrind_control", "-i", "off", str(c.pid)],
                           check=True, capture_output=True)
            print(f"under callgrind: {a.agents * a.events} events acked in "
                  f"{time.time() - t0:.1f}s")
        else:
            fanout(a, c, h, sim, work)
        sim.stop()
    finally:
        c.stop()
        run.end_children()
    report = subprocess.run(["callgrind_annotate", "--inclusive=yes",
                             out_file], capture_output=True, text=True).stdout
    with open(os.path.join(work, "annotate.txt"), "w") as f:
        f.write(report)
    print("\n".join(report.splitlines()[:70]))
    print("full report:", os.path.join(work, "annotate.txt"))


def fanout(a, c, h, sim, work):
    """Instrumentation on from rollout create until every agent got its
    directive."""
    c.push("1.1.0", h.sample_app("1.1.0", os.path.join(work, "app")))
    # The valgrind process is the controller (exec in the wrapper).
    subprocess.run(["callgrind_control", "-i", "on", str(c.pid)],
                   check=True, capture_output=True)
    t0 = time.time()
    r = c.ctl.run("rollout", "create", "--product", "app", "--version",
                  "1.1.0")
    t_rpc = time.time() - t0
    sim.wait(lambda st: st["directives"] >= a.agents, 600, "directed")
    t_directed = time.time() - t0
    subprocess.run(["callgrind_control", "-i", "off", str(c.pid)],
                   check=True, capture_output=True)
    done = c.wait_rollout(r["rollout_id"], 900)
    t_done = time.time() - t0
    print(f"under callgrind: create RPC {t_rpc:.1f}s, all directed "
          f"{t_directed:.1f}s, {done['state']} {t_done:.1f}s")


if __name__ == "__main__":
    main()
