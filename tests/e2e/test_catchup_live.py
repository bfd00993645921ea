"""A secondary started after a primary with history catches up, then follows live records."""

import re

import pytest

from tests.e2e.replication import CATCHING_UP, DAY, INTERVAL, MAIN_KEY, day_stop
from tests.support.station import compare_databases

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
    assert rep.requester_status()[MAIN_KEY]['summaries'] == 'copied'


HILO = re.compile(r'day_\w+: dateTime (\d+) \(.*?\) (min|max|mintime|maxtime|max_dir): ')


def test_loop_highs_and_lows_copied_across_midnight(replication):
    """With WeeWX's stock [StdArchive] loop_hilo = True a primary folds the highs and lows of
    its LOOP packets into its daily summaries: they differ from what its archive records
    alone give (min, max, mintime, maxtime). LOOP packets never leave the primary, yet the
    secondary's summaries equal the primary's row by row -- after its catch-up and after
    live records across midnight -- because they are the primary's, copied."""
    rep = replication()
    rep.seed(days=1)                                           # 288 records, no LOOP
    midnight = day_stop(rep.history_end)                       # the simulator's first
    pri = rep.start_primary()
    # The simulator runs past its first midnight and holds: the catch-up ends there, with a
    # whole day and a quarter of one made from LOOP packets.
    caught_up_at = rep.hold(pri, at=midnight + 6 * 3600)
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    assert position == caught_up_at
    rep.settle()
    rep.assert_equal()                                         # after the catch-up
    assert rep.requester_status()[MAIN_KEY]['summaries'] == 'copied'

    # Live records: the rest of that day, midnight, and the first hour of the next day.
    rep.release()
    next_midnight = midnight + DAY
    rep.wait_live(since=next_midnight, n=12)
    newest = rep.finish(pri, [sec])                            # equal, row by row
    assert caught_up_at < next_midnight < newest
    assert rep.requester_status()[MAIN_KEY]['summaries'] == 'copied'

    # The primary's summaries really hold LOOP highs and lows: WeeWX's rebuild from its
    # archive alone gives other ones, on the days the simulator made (caught up and live)
    # as on the seeded ones (seed_history's loop_extremes), and nothing else differs.
    rebuilt = rep.reference('rebuilt')
    diffs = compare_databases(rep.primary, 'wx_binding', rebuilt, 'wx_binding',
                              max_diffs=100000)
    unexplained = [d for d in diffs if not HILO.match(d)]
    assert not unexplained, unexplained[:10]
    days = {int(HILO.match(d).group(1)) for d in diffs}
    assert days & {midnight, next_midnight} == {midnight, next_midnight}, sorted(days)
    assert day_stop(rep.history_end) - 2 * DAY in days, sorted(days)      # a seeded day


def test_catch_up_through_the_engine(replication):
    """catchup = engine: every record of the backlog is a NEW_ARCHIVE_RECORD of the secondary's
    engine (its services see each one), and the databases still end equal."""
    rep = replication(requester_options={'catchup': 'engine'})
    rep.seed(days=1)                                           # 288 records
    pri = rep.start_primary()
    sec = rep.start_secondary()
    position, stored = rep.wait_caught_up(sec, timeout=120)
    assert stored >= rep.seeded
    # StdArchive logged nothing about duplicates, and no bulk summary rebuild happened
    assert 'daily summaries of' not in rep.secondary.log_text()
    rep.wait_live(since=position, n=10)
    rep.finish(pri, [sec])
