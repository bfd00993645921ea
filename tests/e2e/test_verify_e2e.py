"""The driver's own verification under weewxd (SPEC 5.5): rows deleted and altered on a
secondary while it was stopped are restored after its start-up catch-up, on the engine
thread, archive and daily summaries, while the primary keeps producing."""

import re
import sqlite3

import pytest

from tests.e2e.replication import (DAY, INTERVAL, assert_clean_primary_log,
                                   assert_clean_secondary_log)
from tests.support.station import ENGINE_RESTART

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

    held = rep.hold(pri)
    assert pri.stop() == -15, pri.describe()
    rep.wait_in_sync()
    sec.stop()
    with sqlite3.connect(str(rep.primary.db_path())) as con:
        theirs = {row[0] for row in con.execute('SELECT dateTime FROM archive')}
    with sqlite3.connect(str(rep.secondary.db_path())) as con:
        ours = [row[0] for row in con.execute('SELECT dateTime FROM archive')]
    fault_report('rows of a secondary deleted and altered while it was stopped (weewxd, main '
                 'binding); the primary producing meanwhile',
                 'the driver\'s own verification after the start-up catch-up finds the day '
                 'and replaces it on the engine thread; archive and daily summaries equal',
                 lost=len(theirs - set(ours)), duplicates=len(ours) - len(set(ours)),
                 restarts=len(re.findall(ENGINE_RESTART, rep.primary.log_text())),
                 locked=rep.primary.log_text().count('database is locked'))
    assert rep.primary.last_timestamp() == held
    rep.assert_equal()
    assert_clean_secondary_log(rep.secondary)
    assert_clean_primary_log(rep.primary)
