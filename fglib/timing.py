"""Fair timing of several computations against each other.

    warm-up      every callable runs `warmup` times before any clock reading
    sync         the device is synchronised before and after each call
    interleave   each round runs every callable once; the order rotates from round to round,
                 so no callable always runs first, or always after the same one
    load         each round records how much CPU the rest of the machine used meanwhile
                 (from /proc on Linux); rounds where it exceeded `busy_cores` are disturbed
    medians      over the quiet rounds (all rounds if fewer than half were quiet, flagged)

`keep_freed_memory()` stops glibc from handing freed memory back to the OS between calls
(a step that allocates a large buffer would otherwise pay page faults on every call, and the
order of calls would change the result).
"""
import ctypes
import os
import statistics
import time

import pandas as pd

from . import checks
from .device import synchronize

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(threshold=1 << 30):
    """Raise glibc's trim and mmap thresholds so freed memory stays in the process.
    Returns True where it applied (glibc), False elsewhere."""
    threshold = checks.integer("threshold", threshold, minimum=1, maximum=2 ** 31 - 1)
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def cpu_ticks():
    """(busy clock ticks of the whole machine, ticks of this process), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    return busy, int(own[11]) + int(own[12])    # utime + stime


def other_load(before, after, seconds):
    """Cores the rest of the machine kept busy between two cpu_ticks() readings."""
    if before is None or after is None or seconds <= 0:
        return float("nan")
    hz = os.sysconf("SC_CLK_TCK")
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / hz / seconds)


def time_call(fn, device):
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def timed_rounds(fns, device, warmup=5, repeats=30, busy_cores=0.5):
    """One row per (round, name): seconds, the other processes' load in that round, and
    whether the round was disturbed. The order of the callables rotates each round."""
    warmup, repeats = checks.integer("warmup", warmup, minimum=0), checks.count("repeats", repeats)
    if not isinstance(fns, dict) or not fns or not all(callable(fn) for fn in fns.values()):
        raise TypeError(f"fns must be a non-empty dict of no-argument callables, got {fns!r}")
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    rows = []
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        before, start = cpu_ticks(), time.perf_counter()
        times = {name: time_call(fns[name], device) for name in order}
        load = other_load(before, cpu_ticks(), time.perf_counter() - start)
        rows += [{"round": r, "name": name, "seconds": times[name], "other load": load,
                  "disturbed": load > busy_cores} for name in names]
    return pd.DataFrame(rows)


def quiet(rounds):
    """The undisturbed rounds, or all of them when fewer than half were quiet."""
    calm = rounds[~rounds["disturbed"]]
    return calm if calm["round"].nunique() >= rounds["round"].nunique() / 2 else rounds


def time_samples(fns, device, warmup=5, repeats=30):
    """{name: [seconds of each quiet round]} for a dict of no-argument callables, interleaved."""
    rounds = quiet(timed_rounds(fns, device, warmup, repeats))
    return {name: rounds.loc[rounds["name"] == name, "seconds"].tolist() for name in fns}


def median_times(fns, device, warmup=5, repeats=30):
    """{name: median seconds over the quiet rounds} for a dict of no-argument callables."""
    return {name: statistics.median(s) for name, s in time_samples(fns, device, warmup, repeats).items()}


def ratio_samples(rounds, name, reference):
    """Per round, seconds of `name` / seconds of `reference` measured in that same round."""
    wide = rounds.pivot(index="round", columns="name", values="seconds")
    return (wide[name] / wide[reference]).dropna()


def whole_device(timings):
    """The timing rounds measured with the most threads: the device used whole, as a GPU step uses
    all of its GPU. The book's step ratio S_f/S_b, for claim 3 and inside T = I x S alike, is taken
    there (fglib.book.grading), so that one number stands for it. (The long runs trained on one thread each, two at a
    time on two cores; their iterations I do not depend on the thread count, their step time
    does, and the chapters show the one-thread ratio beside it, see at_threads.)"""
    if timings is None or timings.empty or "threads" not in timings:
        return timings
    return timings[timings["threads"] == timings["threads"].max()]


def at_threads(timings, threads):
    """The timing rounds measured with `threads` threads (empty if none were)."""
    if timings is None or timings.empty or "threads" not in timings:
        return timings.iloc[:0] if timings is not None else timings
    return timings[timings["threads"] == threads]
