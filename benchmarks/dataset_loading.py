"""How long loading a data set takes: decoding and verifying the gzip IDX files (cold)
against reading the decoded .npy cache (warm). Prints a table; results/dataset_loading.txt
holds a recorded run.

    .venv/bin/python benchmarks/dataset_loading.py [--repeats 5]
"""

import argparse
import os
import statistics
import tempfile
import time

from coursekit.student import datapaths, datasets


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"data: {datapaths.data_dirs()[0]}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; median (min-max) of {args.repeats}")
    print(f"{'data set':<15} {'cold: decode + SHA-256':>26} {'warm: .npy cache':>22}")
    with tempfile.TemporaryDirectory() as cache:
        os.environ[datapaths.CACHE_DIR_ENV] = cache
        for name in datasets.PAYLOAD_SHA256:
            cold = timed(lambda: datasets.load(name, use_cache=False), args.repeats)
            datasets.load(name)  # fill the cache
            warm = timed(lambda: datasets.load(name), args.repeats)
            fmt = lambda t: f"{t[0]:.3f} s ({t[1]:.3f}-{t[2]:.3f})"
            print(f"{name:<15} {fmt(cold):>26} {fmt(warm):>22}")


if __name__ == "__main__":
    main()
