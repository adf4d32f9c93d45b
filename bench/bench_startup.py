"""How long a `mimicnet` command takes to start, against the imports it cannot avoid.

Every command is a fresh Python process, and the test suite starts about a hundred of them. Three processes,
timed in turns in the same run (median of --repeat each, after one warm-up of each):

  floor      python -c "import torch, optuna"       what any command must import
  mimicnet   python -m mimicnet.cli --help            the command line as shipped (scipy.stats and matplotlib's
                                                      figure modules load on first use: core/lazy.py)
  eager      the same, with scipy.stats and matplotlib.figure/ticker imported first (as before they were lazy)

Prints seconds and the ratios mimicnet/floor and eager/mimicnet; writes bench/results/startup-cpu.json.

    python bench/bench_startup.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import save

COMMANDS = {
    "floor": [sys.executable, "-c", "import torch, optuna"],
    "mimicnet": [sys.executable, "-m", "mimicnet.cli", "--help"],
    "eager": [sys.executable, "-c", "import scipy.stats, matplotlib.figure, matplotlib.ticker, sys; "
              "from mimicnet.cli import main; sys.argv = ['mimicnet', '--help']; main(['--help'])"],
}


def seconds(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    for cmd in COMMANDS.values():  # warm-up: the page cache, .pyc files
        seconds(cmd)
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.repeat):  # in turns, so a change of machine load touches every command alike
        for k, cmd in COMMANDS.items():
            times[k].append(seconds(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in COMMANDS:
        print(f"{k:9s} {med[k]:6.2f} s  (median of {args.repeat}; min {min(times[k]):.2f}, max {max(times[k]):.2f})")
    print(f"mimicnet / floor: {med['mimicnet'] / med['floor']:.2f}x;  eager / mimicnet: "
          f"{med['eager'] / med['mimicnet']:.2f}x ({med['eager'] - med['mimicnet']:.2f} s saved per command)")
    path = save("startup", {"repeat": args.repeat, "median_s": med, "all_s": times})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
