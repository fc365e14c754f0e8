"""Fair timing: rotating order, per-round ratios, disturbed rounds dropped, load measured."""
import subprocess
import sys
import time

import pandas as pd

import fglib
from fglib import timing


def test_order_rotates_from_round_to_round():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timing.timed_rounds(fns, "cpu", warmup=0, repeats=3)
    firsts = [calls[3 * r] for r in range(3)]
    assert sorted(firsts) == ["a", "b", "c"]  # each callable leads one round


def test_ratios_pair_calls_of_the_same_round():
    rounds = pd.DataFrame({"round": [0, 0, 1, 1], "name": ["fg", "bp"] * 2, "seconds": [2.0, 1.0, 9.0, 3.0],
                           "disturbed": False})
    assert timing.ratio_samples(rounds, "fg", "bp").tolist() == [2.0, 3.0]


def test_disturbed_rounds_are_dropped_unless_most_are():
    rounds = pd.DataFrame({"round": [0, 1, 2, 3], "name": "a", "seconds": [1.0, 9.0, 1.0, 1.0],
                           "disturbed": [False, True, False, False]})
    assert timing.quiet(rounds)["seconds"].tolist() == [1.0, 1.0, 1.0]
    mostly = rounds.assign(disturbed=[True, True, True, False])
    assert len(timing.quiet(mostly)) == 4  # too few quiet rounds: keep all (the chapter flags it)


def test_load_of_another_process_is_seen():
    """A child process spinning on one core for 0.6 s shows as about one busy core."""
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<0.8: pass"])
    time.sleep(0.1)
    before, start = timing.cpu_ticks(), time.perf_counter()
    time.sleep(0.5)
    load = timing.other_load(before, timing.cpu_ticks(), time.perf_counter() - start)
    child.wait()
    assert load > 0.6


def test_freed_memory_is_kept_on_glibc():
    assert fglib.keep_freed_memory() is True
