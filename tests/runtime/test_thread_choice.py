"""ThreadChooser: the thread count of each decode step follows the measured step times."""

from __future__ import annotations

from sparseft.runtime.thread_choice import ThreadChooser


def run(chooser: ThreadChooser, seconds: dict[int, float], steps: int) -> list[int]:
    """The counts chosen over `steps` steps when a step at n threads takes seconds[n]."""
    chosen = []
    for _ in range(steps):
        n = chooser.threads()
        chooser.record(n, seconds[n])
        chosen.append(n)
    return chosen


def test_one_thread_allowed_means_one_thread() -> None:
    assert set(run(ThreadChooser(most=1), {1: 0.004}, 50)) == {1}


def test_a_free_second_core_is_used_and_the_other_count_retried() -> None:
    chosen = run(ThreadChooser(most=2, explore_every=16), {1: 0.004, 2: 0.0025}, 64)
    assert chosen[:4] == [1, 1, 2, 2]  # each run twice first (the first run of a count is a warm-up)
    assert chosen.count(2) >= 58 and 1 in chosen[16:]  # mostly 2, 1 retried now and then


def test_a_count_that_keeps_losing_is_retried_less_and_less_often() -> None:
    chosen = run(ThreadChooser(most=2, explore_every=16), {1: 0.004, 2: 0.008}, 16 + 32 + 64 + 128 + 8)
    retries = [i for i, n in enumerate(chosen) if n == 2][1:]  # after the first measurement
    gaps = [b - a for a, b in zip(retries, retries[1:], strict=False)]
    assert len(gaps) >= 3 and all(later > earlier for earlier, later in zip(gaps, gaps[1:], strict=False))


def test_a_slow_first_step_does_not_rule_a_count_out() -> None:
    chooser = ThreadChooser(most=2)
    for n, seconds in [(1, 0.004), (1, 0.004), (2, 0.05), (2, 0.0025)]:  # 2's first step starts the pool
        assert chooser.threads() == n
        chooser.record(n, seconds)
    assert chooser.threads() == 2


def test_a_busy_second_core_is_left_within_a_few_steps() -> None:
    chooser = ThreadChooser(most=2, explore_every=16)
    run(chooser, {1: 0.004, 2: 0.0025}, 32)
    later = run(chooser, {1: 0.004, 2: 0.006}, 32)  # the other core got busy: 2 threads now slower
    assert later[:4].count(2) <= 2 and later[8:].count(2) <= 2
    assert sum(chooser.steps.values()) == 64
