"""Reading a large shared-memory segment into a new bytes object: bigbuf against os.read.

    python perf/bench_shm_read.py [--mb 100] [--repeat 15]

Both paths read the same tmpfs segment, interleaved run by run, so noise hits them alike.
Prints the median (and best) milliseconds of each and their ratio. Nothing here asserts:
figures go to perf/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from graflow.mp import bigbuf, shm


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    size = args.mb * 1024 * 1024
    shared = shm.share(b"x" * size)
    path = os.path.join(shm.SHM_DIR, shared.ref.name)

    def plain() -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.read(fd, size)
        finally:
            os.close(fd)

    def huge() -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            value: bytes = bigbuf.filled_from_fd(bytes, fd, size)[0]
            return value
        finally:
            os.close(fd)

    paths: dict[str, Callable[[], bytes]] = {"os.read": plain, "bigbuf": huge}
    times: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for _ in range(args.repeat):
            for name, fn in paths.items():
                start = time.perf_counter()
                value = fn()
                times[name].append((time.perf_counter() - start) * 1e3)
                assert len(value) == size
                del value
    finally:
        shm.release([shared.ref])
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"{name:8} median {med[name]:7.1f} ms   best {min(ts):7.1f} ms")
    print(
        f"bigbuf is x{med['os.read'] / med['bigbuf']:.2f} faster ({args.mb} MB, {args.repeat} runs)"
    )


if __name__ == "__main__":
    main()
