"""Reading a large shared-memory segment as a bytes object: os.read, bigbuf and mapped.

    python perf/bench_shm_read.py [--mb 100] [--repeat 15]

All paths read the same tmpfs segment (as ``shm.share`` writes it), interleaved run by run,
so noise hits them alike: ``os.read`` into a new bytes object (the baseline), ``bigbuf``
(one pass into huge pages, the copy graflow falls back to) and ``mapped`` (the segment mapped
into a bytes object, no copy: what graflow does). Prints the median (and best) milliseconds
of each and their ratios to the baseline. Nothing here asserts: figures go to
perf/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from graflow.mp import bigbuf, mapped, shm


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
            return os.pread(fd, size, mapped.HEADER_BYTES)
        finally:
            os.close(fd)

    def huge() -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.lseek(fd, mapped.HEADER_BYTES, os.SEEK_SET)
            value: bytes = bigbuf.filled_from_fd(bytes, fd, size)[0]
            return value
        finally:
            os.close(fd)

    def mapping() -> bytes:
        value = shm.read_shared("bytes", shared.ref.name, size)
        assert isinstance(value, bytes)
        return value

    paths: dict[str, Callable[[], bytes]] = {"os.read": plain, "bigbuf": huge}
    if mapped.available():
        paths["mapped"] = mapping
    times: dict[str, list[float]] = {name: [] for name in paths}
    scans: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for _ in range(args.repeat):
            for name, fn in paths.items():
                start = time.perf_counter()
                value = fn()
                got = time.perf_counter()
                # A consumer that reads every byte once: mapped pages fault in here.
                assert value.count(b"y") == 0
                times[name].append((got - start) * 1e3)
                scans[name].append((time.perf_counter() - start) * 1e3)
                del value
                mapped.collect()
    finally:
        shm.release([shared.ref])
    med = {name: statistics.median(ts) for name, ts in times.items()}
    full = {name: statistics.median(ts) for name, ts in scans.items()}
    print(f"{'':8} {'value in hand':>24} {'value + one full scan':>30}")
    for name, ts in times.items():
        got = f"{med[name]:8.2f} ms (x{med['os.read'] / med[name]:.1f})"
        scan = f"{full[name]:8.2f} ms (x{full['os.read'] / full[name]:.1f})"
        print(f"{name:8} {got:>24} {scan:>30}   best {min(ts):.2f} ms")
    print(f"({args.mb} MB, medians of {args.repeat} runs; x: times faster than os.read)")


if __name__ == "__main__":
    main()
