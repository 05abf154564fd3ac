"""The thread count of each decode step, chosen from measured step times.

On a machine shared with other work a second thread can slow a small model down: when its core is busy,
the chunk of rows it claimed waits for the scheduler while the caller idles (SmolLM2-135M 70% W8A8 with
a training run on the other vCPU: 292 tokens/s at 1 thread, 197 at 2). Whether the other core is free
changes from second to second, so no setting fixed in advance is right. `ThreadChooser` keeps a moving
average of the step time at 1 and at the most threads allowed, runs the faster, and retries the slower
one now and then (less often the longer it keeps losing), so decoding follows the machine: never much
below one thread, and faster where the second core is free.

    >>> chooser = ThreadChooser(most=2)
    >>> n = chooser.threads()                 # 1 or 2 for the next step
    >>> chooser.record(n, seconds=0.004)      # what that step took
"""

from __future__ import annotations


class ThreadChooser:
    """Picks 1 or `most` threads per step from exponential moving averages of their step times; the slower
    count is retried after `explore_every` steps, then after twice as many each time it loses again (up
    to `longest`), so a core busy for long costs few slow steps."""

    def __init__(self, most: int, explore_every: int = 16, smoothing: float = 0.3, longest: int = 256) -> None:
        self.candidates = (1,) if most <= 1 else (1, most)
        self.explore_every, self.smoothing, self.longest = explore_every, smoothing, longest
        self.average: dict[int, float | None] = dict.fromkeys(self.candidates)
        self.steps = dict.fromkeys(self.candidates, 0)  # steps run at each count (reports)
        self._count, self._interval, self._next_retry = 0, explore_every, explore_every
        self._warm: set[int] = set()  # counts run once: a first step pays one-off costs (the pool's threads start)

    def _best(self) -> int:
        return min(self.candidates, key=lambda n: self.average[n])

    def threads(self) -> int:
        """The thread count of the next step: one not yet measured, else the faster, or the slower when
        its retry is due."""
        unmeasured = [n for n in self.candidates if self.average[n] is None]
        if unmeasured:
            return unmeasured[0]
        best = self._best()
        if len(self.candidates) > 1 and self._count >= self._next_retry:
            return next(n for n in self.candidates if n != best)
        return best

    def record(self, threads: int, seconds: float) -> None:
        """The measured time of a step run at ``threads``; the first one of each count is not averaged."""
        self.steps[threads] += 1
        self._count += 1
        if threads not in self._warm:
            self._warm.add(threads)
            return
        old = self.average[threads]
        retried = old is not None and len(self.candidates) > 1 and threads != self._best()
        self.average[threads] = seconds if old is None else old + self.smoothing * (seconds - old)
        if retried:  # lost again: wait longer before the next retry; won: back to the short interval
            lost = threads != self._best()
            self._interval = min(2 * self._interval, self.longest) if lost else self.explore_every
            self._next_retry = self._count + self._interval
