"""aiokpl against kpl_rs: the CPU of the same producer program, measured in one run.

Runs ``producer_cpu.py`` (beside this file) in subprocesses of this interpreter,
alternating aiokpl, kpl_rs with ``put_record`` and kpl_rs with ``put_records`` in
batches of 500, ``--runs`` times each (3 by default), so the three see the same
machine; and the program on its do-nothing stand-in (``--impl floor``, both
modes): Python's own share, below which no producer goes. It reports the median
process CPU of each and the ratios aiokpl CPU / kpl_rs CPU (targets: at least 30
per record, at least 60 in batches), and aiokpl CPU / floor CPU (the most any
producer could reach), as one JSON line and one line for people. When ``kpl_rs``
is not importable it measures aiokpl (and the floor) alone. It exits 1 if a run
fails (or, with ``--require-targets``, if a ratio misses its target).

The interpreter needs aiokpl 0.2.0 and kpl_rs installed
(``pip install aiokpl==0.2.0 ./crates/kpl-python``). The stream is kinesalite's,
from the workspace root::

    cargo xtask kinesalite --shards 4 -- python crates/kpl-python/bench/compare.py

The children get test credentials (kinesalite takes any) and no instance-metadata
lookups.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PROGRAM = Path(__file__).with_name("producer_cpu.py")

#: (implementation, mode) of each variant, in the order they alternate.
BASELINE = ("aiokpl", "put_record")
PER_RECORD = ("kpl_rs", "put_record")
BATCHED = ("kpl_rs", "put_records")
FLOORS = {PER_RECORD: ("floor", "put_record"), BATCHED: ("floor", "put_records")}

#: The least aiokpl CPU / kpl_rs CPU wanted for each kpl_rs variant (issue 23).
TARGETS = {PER_RECORD: 30.0, BATCHED: 60.0}

TEST_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def run_once(variant: tuple[str, str], extra: list[str]) -> dict[str, object]:
    impl, mode = variant
    env = {**os.environ, **TEST_ENVIRONMENT}
    done = subprocess.run(
        [sys.executable, str(PROGRAM), "--impl", impl, "--mode", mode, *extra],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{impl} {mode}: exit status {done.returncode}, stdout {done.stdout!r}")
    return json.loads(lines[-1])


def name(variant: tuple[str, str]) -> str:
    return f"{variant[0]} {variant[1]}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs of each variant")
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--require-targets", action="store_true", help="exit 1 if a ratio misses")
    args = p.parse_args()
    if "KPL_KINESALITE_ENDPOINT" not in os.environ:
        p.error("KPL_KINESALITE_ENDPOINT is not set: run under `cargo xtask kinesalite`")

    variants = [BASELINE]
    if importlib.util.find_spec("kpl_rs") is not None:
        variants += [PER_RECORD, BATCHED]
    else:
        print("kpl_rs is not importable: measuring aiokpl alone", file=sys.stderr)
    variants += [FLOORS[PER_RECORD], FLOORS[BATCHED]]

    runs: dict[tuple[str, str], list[dict[str, object]]] = {v: [] for v in variants}
    for round_ in range(args.runs):
        for variant in variants:
            result = run_once(variant, ["--records", str(args.records)])
            runs[variant].append(result)
            print(f"run {round_ + 1}/{args.runs} {name(variant)}: {result['cpu_s']} CPU s",
                  file=sys.stderr)

    medians = {v: statistics.median(float(r["cpu_s"]) for r in rs) for v, rs in runs.items()}
    report: dict[str, object] = {
        "records": args.records,
        "runs": args.runs,
        "median_cpu_s": {name(v): round(c, 4) for v, c in medians.items()},
        "records_per_cpu_s": {name(v): round(args.records / c) for v, c in medians.items()},
        "median_main_thread_cpu_s": {
            name(v): round(statistics.median(float(r["main_thread_cpu_s"]) for r in rs), 4)
            for v, rs in runs.items()
        },
        "cpu_s": {name(v): [r["cpu_s"] for r in rs] for v, rs in runs.items()},
    }
    ratios = {v: medians[BASELINE] / medians[v] for v in variants if v in TARGETS}
    report["ratios"] = {name(v): round(r, 1) for v, r in ratios.items()}
    report["targets"] = {name(v): t for v, t in TARGETS.items()}
    ceilings = {v: medians[BASELINE] / medians[f] for v, f in FLOORS.items()}
    report["ratio_ceilings"] = {name(v): round(c, 1) for v, c in ceilings.items()}
    missed = [v for v, r in ratios.items() if r < TARGETS[v]]
    report["targets_met"] = not missed if ratios else None
    print(json.dumps(report), flush=True)

    human = [f"{name(v)} {medians[v]:.3f} CPU s ({args.records / medians[v]:,.0f} records/CPU s)"
             for v in variants]
    human += [f"aiokpl/{name(v)} {r:.1f}x (target {TARGETS[v]:.0f}x, ceiling {ceilings[v]:.1f}x)"
              for v, r in ratios.items()]
    print(f"median of {args.runs}: " + "; ".join(human), flush=True)
    return 1 if missed and args.require_targets else 0


if __name__ == "__main__":
    sys.exit(main())
