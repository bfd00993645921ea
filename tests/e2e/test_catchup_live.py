"""A secondary started after a primary with history catches up, then follows live records."""

import pytest

from tests.e2e.replication import CATCHING_UP, INTERVAL, MAIN_KEY

pytestmark = pytest.mark.e2e


def test_catch_up_then_live(replication):
    rep = replication()
    first, last_seeded = rep.seed(days=14)                     # 4,032 records
    pri = rep.start_primary()
    rep.wait_primary_grows(50)                                 # the primary is producing

    sec = rep.start_secondary()
    sec.wait_for_log(CATCHING_UP % MAIN_KEY, timeout=30)
    position, stored = rep.wait_caught_up(sec)
    # Everything seeded, plus what the primary made before the request, came in the catch-up.
    assert position >= last_seeded + 50 * INTERVAL
    assert stored >= rep.seeded + 50
    assert rep.secondary.count_records() >= stored

    # Live records follow, through the secondary's engine.
    rep.wait_live(since=position, n=30)

    rep.finish(pri, [sec])
    assert rep.secondary.count_records() > rep.seeded + 80
