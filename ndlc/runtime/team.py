"""How many threads a program's split kernels run on, chosen per program by timing its calls.

A compiled program runs on any team from 1 to the threads it was scheduled for, with the same
results (codegen/llvm_calls.py reads the team at run time). Which team is fastest depends on the
program and on the machine's load: on two quiet cores a program's kernels are scheduled for the
budget and run fastest on it; beside another job, 2 threads spin over the other job's core and a
step runs several times slower than on one. So with NDLC_TEAM=adaptive (the default) each program
takes a first look: its first timed call runs on one thread, the next on the whole budget, and a
budget STALLED times slower than one thread in two calls in a row (its threads waited for cores
another job held: a 256x1024 BatchNorm1d at load 6.8 took 8-28 ms a call on 2 threads, 0.1-0.3 ms on
one) is left at once; otherwise it stays on the whole budget and, after FIRST_PROBE calls, times
SAMPLES calls of another team (1, then the halvings between) against the chosen team's recent calls,
again after `interval` calls, an interval that doubles from PROBE_EVERY to PROBE_MOST while the
choice holds (probes stay under 5% of calls, below any p90). A probe with fewer threads switches
when its median beats the chosen team's by FEWER, one with more threads by MARGIN: a quiet machine's
first calls are too noisy to leave the budget for less than a clear gain, while contention's gains
are several-fold. The chosen team's calls slowing by SLOWER (another job started) brings the next
probe forward. A comparison ends early when one team is CLEAR-ly faster: under contention the team
that spins over another job's core is often several times slower, and every call of it counts.
NDLC_TEAM=budget always runs the whole budget. The team is one process-wide value
(runtime/libraries.py), set before each call: programs run at once from several Python threads
may run on each other's team, with the same results.
"""
import collections
import logging
import statistics
import time

from ..env import team_policy
from . import libraries

log = logging.getLogger("ndlc.team")
SAMPLES = 3  # calls of the other team per probe
FIRST_PROBE = 24  # calls on the whole budget before the first probe: a short run (a benchmark's 20
# calls, a few evaluation batches) pays for no probe, a contended start for at most this many
PROBE_EVERY = 64  # calls between probes after a switch; doubled each time the choice holds
PROBE_MOST = 4096
MARGIN = 0.08  # a probe with more threads must be this much faster than the chosen team
FEWER = 0.2  # a probe with fewer threads must be this much faster
CLEAR = 1.5  # a team whose slowest call is this much faster than the others' fastest wins at once
STALLED = 4  # at the first look, the budget's call this many times one thread's: it waited for cores
# (never from splitting the work alone: more threads each do less of it)
SLOWER = 1.5  # the chosen team's recent median this much above its median when chosen: probe now
WINDOW = 5  # the chosen team's recent calls whose median it is judged by (odd)
EVERY = 4  # a steady run (`call`) on a settled team is timed once in this many calls (timing and
# recording one cost ~0.4 us of a 4 us call's overhead); looks and probes time every call


def most_threads(kernels) -> int:
    """The most threads any split kernel of `kernels` (a kernel.Program) was scheduled for."""
    return max((k.split.threads for k in kernels.kernels if k.split), default=1)


class Team:
    """The team of one program whose split kernels were scheduled for at most `threads` threads:
    `run(fn, *args)` calls fn on the team chosen for this call and returns the seconds it took;
    `call(fn)` (a steady run's) times only the calls the choice needs; `current` is the team in use."""

    def __init__(self, name, threads):
        self.name = name
        self.adaptive = threads > 1 and team_policy() == "adaptive"
        self.candidates = sorted({max(1, threads >> k) for k in range(threads.bit_length())})
        self.current = threads
        self.interval = PROBE_EVERY
        self.until_probe = FIRST_PROBE
        self.reference = None  # the chosen team's median when chosen or last confirmed
        self.recent = collections.deque(maxlen=WINDOW)
        self.trials = []  # (team, seconds) of the calls being compared
        self.plan = []  # the teams of the next calls: a probe's
        self.warm = not self.adaptive  # the first call (page faults, cold caches) is not timed
        self.look = self.adaptive  # the first look (a call on one thread, then one on the budget) to come
        self.probed = 0  # probes so far, to take the other candidates in turn
        self.untimed = 0  # the next calls of `call` that run without timing

    def run(self, fn, *args) -> float:
        """fn(*args) on this call's team; the seconds it took (recorded to choose the team)."""
        team = self.plan[0] if self.plan and self.warm else self.current
        libraries.set_team(team)
        start = time.perf_counter()
        fn(*args)
        seconds = time.perf_counter() - start
        if self.adaptive:
            self._record(team, seconds)
        return seconds

    def call(self, fn):
        """fn() on this call's team, as `run`, but timed once in EVERY calls while the team is
        settled (no look or probe under way); the calls in between count towards the next probe,
        so probes come after as many calls, and a slowdown shows in WINDOW timed calls."""
        if self.untimed:
            self.untimed -= 1
            libraries.set_team(self.current)
            fn()
            return
        self.run(fn)
        if self.adaptive and self.warm and not self.look and not self.plan:
            self.untimed = EVERY - 1
            self.until_probe -= EVERY - 1

    def _record(self, team, seconds):
        if not self.warm:
            self.warm = True
            self.plan = [self.candidates[0]]
            return
        if self.look:
            self._look(team, seconds)
            return
        if self.plan:
            self.trials.append((team, seconds))
            del self.plan[0]
            if not self.plan or self._clear():
                self.plan = []
                self._judge()
            return
        self.recent.append(seconds)
        self.until_probe -= 1
        slowed = (self.reference is not None and len(self.recent) == WINDOW
                  and sorted(self.recent)[WINDOW // 2] > SLOWER * self.reference)
        if self.until_probe <= 0 or slowed:
            others = [c for c in self.candidates if c != self.current]
            self.plan = [others[self.probed % len(others)]] * SAMPLES
            self.trials = [(self.current, s) for s in self.recent]
            self.probed += 1

    def _look(self, team, seconds):
        """The first look: its one-thread call kept, then each budget call compared with it; the
        budget is left when two calls in a row are STALLED times slower (one alone may have woken a
        sleeping thread), and kept at the first that is not."""
        if self.plan:
            self.plan, self.trials = [], [(team, seconds)]
            return
        alone, once = self.trials[0]
        if seconds <= STALLED * once:
            self.trials, self.look = [], False
            self.recent.append(seconds)
            self.until_probe -= 1
        elif len(self.trials) == 1:
            self.trials.append((team, seconds))
        else:
            log.info("@%s: team %d -> %d threads at the first look (%.3f and %.3f ms, %.3f ms on %d)", self.name,
                     self.current, alone, self.trials[1][1] * 1e3, seconds * 1e3, once * 1e3, alone)
            self.trials, self.look = [], False
            self.current, self.reference, self.until_probe = alone, once, self.interval

    def _clear(self) -> bool:
        """Whether the calls compared so far already show one team fastest by far (its slowest
        call CLEAR times faster than every other team's fastest, every team timed): a team that
        lost its cores to another job is not run for all its samples."""
        times = collections.defaultdict(list)
        for team, seconds in self.trials:
            times[team].append(seconds)
        if not set(self.plan) <= set(times):
            return False
        best = min(times, key=lambda team: max(times[team]))
        return all(CLEAR * max(times[best]) < min(s) for team, s in times.items() if team != best)

    def _judge(self):
        """Choose among the teams timed in `trials` (a probe must beat the chosen team by FEWER or
        MARGIN)."""
        medians = {team: statistics.median(s for t, s in self.trials if t == team)
                   for team in {t for t, _ in self.trials}}
        best = min(medians, key=medians.get)
        kept = medians.get(self.current)
        margin = FEWER if best < self.current else MARGIN
        if kept is not None and best != self.current and medians[best] > (1 - margin) * kept:
            best = self.current
        if best == self.current and self.reference is not None:
            self.interval = min(2 * self.interval, PROBE_MOST)
        else:
            if best != self.current:
                log.info("@%s: team %d -> %d threads (median %s)", self.name, self.current, best,
                         ", ".join(f"{t}: {m * 1e3:.3f} ms" for t, m in sorted(medians.items())))
            self.interval = PROBE_EVERY
        self.current, self.reference = best, medians[best]
        self.until_probe = self.interval
        self.recent.clear()
        self.trials = []

    def __str__(self):
        how = "adaptive" if self.adaptive else "fixed"
        return f"team {self.current} of {self.candidates[-1]} threads ({how})"
