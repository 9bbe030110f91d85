"""`python -m benchmarks [names...]`: run the named benchmarks (all by default), each printing a table."""

from __future__ import annotations

import importlib
import sys
import time

NAMES = ("overhead", "throughput", "scale", "memory", "hotpath", "peers", "versions", "tree", "dashboard",
         "search", "schedules", "flow", "payload")


def main(argv: list[str]) -> int:
    names = argv or list(NAMES)
    unknown = [name for name in names if name not in NAMES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(NAMES)}", file=sys.stderr)
        return 2
    from benchmarks.common import machine

    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}", flush=True)
    failed = []
    for name in names:
        print(f"\n== {name} ==", flush=True)
        started = time.monotonic()
        try:
            importlib.import_module(f"benchmarks.{name}").run()
        except Exception as error:  # one benchmark failing must not hide the others' figures
            failed.append(name)
            print(f"{name} failed: {error.__class__.__name__}: {error}", file=sys.stderr, flush=True)
        print(f"({name}: {time.monotonic() - started:.0f} s)", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
