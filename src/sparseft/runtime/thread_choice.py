"""The thread count of each decode step, chosen from measured step times.

On a machine shared with other work a second thread can slow a small model down: when its core is busy,
the chunk of rows it claimed waits for the scheduler while the caller idles (SmolLM2-135M 70% W8A8 with
a training run on the other vCPU: 292 tokens/s at 1 thread, 197 at 2). Whether the other core is free
changes from second to second, so no setting fixed in advance is right. `ThreadChooser` keeps a moving
average of the step time at 1 and at the most threads allowed, runs the faster, and retries the slower
one every `explore_every` steps, so decoding follows the machine: never much below one thread, and
faster where the second core is free.

    >>> chooser = ThreadChooser(most=2)
    >>> n = chooser.threads()                 # 1 or 2 for the next step
    >>> chooser.record(n, seconds=0.004)      # what that step took
"""

from __future__ import annotations


class ThreadChooser:
    """Picks 1 or `most` threads per step from exponential moving averages of their step times."""

    def __init__(self, most: int, explore_every: int = 16, smoothing: float = 0.3) -> None:
        self.candidates = (1,) if most <= 1 else (1, most)
        self.explore_every, self.smoothing = explore_every, smoothing
        self.average: dict[int, float | None] = dict.fromkeys(self.candidates)
        self.steps = dict.fromkeys(self.candidates, 0)  # steps run at each count (reports)
        self._count = 0

    def threads(self) -> int:
        """The thread count of the next step: one not yet measured, else the faster, with a periodic retry
        of the other."""
        unmeasured = [n for n in self.candidates if self.average[n] is None]
        if unmeasured:
            return unmeasured[0]
        best = min(self.candidates, key=lambda n: self.average[n])
        if len(self.candidates) > 1 and self._count % self.explore_every == self.explore_every - 1:
            return next(n for n in self.candidates if n != best)
        return best

    def record(self, threads: int, seconds: float) -> None:
        """The measured time of a step run at ``threads``."""
        old = self.average[threads]
        self.average[threads] = seconds if old is None else old + self.smoothing * (seconds - old)
        self.steps[threads] += 1
        self._count += 1
