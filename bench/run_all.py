"""Run every benchmark (quick mode by default) and print one table of project-against-baseline ratios.

    python bench/run_all.py            # each bench with --quick: checks them all in a few minutes
    python bench/run_all.py --full     # the real sizes (tens of minutes on 2 cores)
    python bench/run_all.py --only train,generate

Each bench prints its own figures, the baseline's and their ratio; this script
runs them one after another (never in parallel: they would time each other),
keeps every line that states a ratio, and prints them together with the load
average at the start and end, since a busy machine skews wall-clock ratios.
Full outputs go to bench/out/<name>.log.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# In the order the data flows through the project.
BENCHES = ("wikidata", "dedupe", "sft_tokenize", "simulate", "train", "generate")
_RATIO = re.compile(r"(ratio|\d\s*[x×](?![a-z0-9]))", re.IGNORECASE)


def ratio_lines(output: str) -> list[str]:
    """The lines of a bench's output that state a ratio (`ratio`, or a number followed by x/×)."""
    return [line.rstrip() for line in output.splitlines() if _RATIO.search(line)]


def run_bench(name: str, *, full: bool, log_dir: Path) -> tuple[int, float, list[str]]:
    cmd = [sys.executable, str(HERE / f"{name}.py")] + ([] if full else ["--quick"])
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    seconds = time.perf_counter() - started
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc.returncode, seconds, ratio_lines(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="run each bench at its real size instead of --quick")
    ap.add_argument("--only", help="comma-separated bench names (default: all of " + ", ".join(BENCHES) + ")")
    ap.add_argument("--log-dir", type=Path, default=HERE / "out", help="where each bench's full output goes (default bench/out)")
    args = ap.parse_args(argv)
    names = BENCHES if not args.only else tuple(n.strip() for n in args.only.split(","))
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown bench(es) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    load_start = os.getloadavg()
    failed = 0
    sections = []
    for name in names:
        print(f"[run_all] {name} ({'full' if args.full else 'quick'}) ...", file=sys.stderr, flush=True)
        rc, seconds, lines = run_bench(name, full=args.full, log_dir=args.log_dir)
        failed += rc != 0
        sections.append((name, rc, seconds, lines))
    load_end = os.getloadavg()
    print(f"mode: {'full' if args.full else 'quick (small inputs: ratios only show the benches work)'}")
    print(f"load average: {load_start[0]:.2f} at start, {load_end[0]:.2f} at end")
    for name, rc, seconds, lines in sections:
        status = "ok" if rc == 0 else f"FAILED (exit {rc}; see {args.log_dir / (name + '.log')})"
        print(f"\n## {name}: {status}, {seconds:.0f}s")
        for line in lines or ["(no ratio line printed)"]:
            print(f"  {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
