"""The nemesis's plan (tests/nemesis/schedule.py): the same seed gives the same plan, a fault
every few seconds, each on a target that exists when it runs."""

from tests.nemesis.schedule import (INTERVALS, JOINER, KINDS, PRIMARY, SECONDARIES, draw)


def test_the_same_seed_replays_the_same_plan():
    assert draw(19, 1.5) == draw(19, 1.5)
    assert draw(19, 1.5) != draw(20, 1.5)


def test_plans_cover_every_kind_and_interval():
    plans = [draw(seed, 3) for seed in range(40)]
    assert {p.interval for p in plans} == set(INTERVALS)
    assert {f.kind for p in plans for f in p.faults} == set(KINDS) | {'join'}


def test_a_fault_every_few_seconds_on_a_target_that_runs():
    for seed in range(40):
        plan = draw(seed, 3)
        joins = [f for f in plan.faults if f.kind == 'join']
        assert len(joins) == 1 and joins[0].target == JOINER
        previous = None
        for fault in plan.faults:
            assert 0 < fault.at < 180 - 5 + 1
            if previous is not None:
                assert 1.9 <= fault.at - previous.at - previous.hold <= 6.1   # rounded
            if fault.at < joins[0].at:
                assert fault.target != JOINER
            if fault.kind in ('import', 'correct', 'inf'):
                assert fault.target == PRIMARY
            if fault.kind == 'sigterm-catchup':
                assert fault.target in SECONDARIES + (JOINER,)
            previous = fault
