"""How long the command line takes to start: best of N wall-clock runs, as a markdown table.

    python benchmarks/cli_startup.py            # best of 5
    python benchmarks/cli_startup.py --runs 10

Rows: the bare interpreter (the floor), `trt-metric3d --help`, `<command> --help` for a few commands,
and `import torch` for scale (the start-up must not pay it). Target: --help under 0.3 s. To find what
a slow start imports: python -X importtime -c "import trt_metric3d.cli" 2>&1 | sort -t'|' -k2 -n
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CLI = "from trt_metric3d.cli import main; main()"
CASES = {
    "python -c pass": ["-c", "pass"],
    "trt-metric3d --help": ["-c", CLI, "--help"],
    "trt-metric3d infer --help": ["-c", CLI, "infer", "--help"],
    "trt-metric3d serve --help": ["-c", CLI, "serve", "--help"],
    "trt-metric3d build --help": ["-c", CLI, "build", "--help"],
    "import torch (for scale)": ["-c", "import torch"],
}


def best_of(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    print(f"| command | best of {runs} (s) |\n|---|---:|")
    for name, args in CASES.items():
        print(f"| {name} | {best_of(args, runs):.3f} |")


if __name__ == "__main__":
    main()
