"""A secondary started after a primary with history catches up, then follows live records."""

import re

import pytest

from tests.e2e.replication import CATCHING_UP, INTERVAL, MAIN_KEY
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


def test_loop_highs_and_lows_stay_on_the_primary(replication):
    """With WeeWX's default [StdArchive] loop_hilo = True, a primary folds the highs and lows of
    its LOOP packets into its daily summaries.  LOOP packets are not replicated, so a
    secondary's summaries can differ there -- and only there: the archive rows, counts and
    sums are the same.  (Every other test runs its primary with loop_hilo = False.)"""
    rep = replication()
    rep.primary.edit(lambda c: c['StdArchive'].__setitem__('loop_hilo', 'True'))
    rep.seed(days=2)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    rep.wait_live(since=position, n=100)
    rep.hold(pri)
    pri.stop()
    rep.wait_in_sync()
    sec.stop()

    diffs = compare_databases(rep.primary, 'wx_binding', rep.secondary, 'wx_binding',
                              max_diffs=100000)
    assert not [d for d in diffs if d.startswith('archive')], diffs[:10]
    columns = {m.group(1) for d in diffs
               if (m := re.match(r'day_\w+: dateTime \d+ \(.*?\) (\w+): ', d))}
    assert diffs and len(columns) > 0, diffs[:10]
    unexplained = [d for d in diffs if not re.match(r'day_\w+: dateTime \d+ \(.*?\) '
                                                       r'(min|max|mintime|maxtime|max_dir): ', d)]
    assert not unexplained, unexplained[:10]


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
