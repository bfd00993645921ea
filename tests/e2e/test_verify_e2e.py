"""The driver's own verification under weewxd (SPEC 5.5): rows deleted and altered on a
secondary while it was stopped are restored after its start-up catch-up, on the engine
thread, archive and daily summaries, while the primary keeps producing."""

import sqlite3

import pytest

from tests.e2e.replication import DAY, INTERVAL
from tests.support.measure import Fault

pytestmark = pytest.mark.e2e

IN_SYNC = r'requester: weewx/wx_binding: verified .* in sync'
REPAIRED = r'requester: weewx/wx_binding: repaired \S+: (\d+) records from the primary'


def test_damaged_secondary_is_repaired_after_its_catchup(replication, fault_report):
    rep = replication()
    rep.seed(days=3)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    rep.wait_caught_up(sec)
    sec.wait_for_log(IN_SYNC, timeout=60)
    assert sec.stop() == -15, sec.describe()

    # An hour deleted and a row altered, one day before the newest record: inside the
    # verify window (7 days), older than anything a catch-up would fetch.
    newest = rep.secondary.last_timestamp()
    day = newest - DAY - (newest - DAY) % DAY
    first, altered = day + 6 * 3600, day + 12 * 3600
    con = sqlite3.connect(str(rep.secondary.db_path()))
    with con:
        deleted = con.execute('DELETE FROM archive WHERE dateTime > ? AND dateTime <= ?',
                              (first, first + 3600)).rowcount
        con.execute('UPDATE archive SET outTemp = outTemp + 1 WHERE dateTime = ?', (altered,))
    con.close()
    assert deleted == 3600 // INTERVAL

    sec = rep.start_secondary()
    rep.wait_caught_up(sec)
    repaired = sec.wait_for_log(REPAIRED, timeout=60)
    assert int(repaired.group(1)) == DAY // INTERVAL
    assert 'differ from the primary' in sec.log_text()

    rep.finish(pri, [sec], fault=Fault(
        fault_report, 'rows of a secondary deleted and altered while it was stopped '
        '(weewxd, main binding); the primary producing meanwhile',
        'the driver\'s own verification after the start-up catch-up finds the day and '
        'replaces it on the engine thread; archive and daily summaries equal'))
