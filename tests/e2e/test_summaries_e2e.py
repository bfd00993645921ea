"""The primary's daily summaries on the secondary (issue 9), with WeeWX's stock
``[StdArchive] loop_hilo = True`` on both stations: every ``archive_day_*`` row equal to the
primary's after ``kill -9`` of either side in the middle of a day while live records flow;
and a secondary that converts its main binding to another unit system, where the primary's
summaries cannot be right: it rebuilds that binding's own from its archive, says so once in
its log and in its status, and holds the primary's records, converted -- while its other
binding, in the primary's unit system, still gets the primary's summaries copied."""

import re
import sqlite3

import pytest
import weewx

from tests.e2e.replication import AQ_KEY, DAY, INTERVAL, MAIN_KEY, day_stop, wait_until
from tests.support.measure import Fault
from tests.support.station import compare_databases

pytestmark = pytest.mark.e2e

REBUILT = (r'requester: (\S+): daily summaries are rebuilt here from the archive, not copied '
           r'from the primary: (.*)$')


def wait_mid_day(rep, after):
    """Wait until the secondary's newest record is 9 h into the day after `after`'s (live
    records flowing); return that record's dateTime."""
    midday = day_stop(after) + 9 * 3600
    return wait_until(lambda: (ts := rep.secondary.last_timestamp() or 0) >= midday and ts,
                      30, 'the secondary to reach %s' % midday, interval=0.02)


def in_the_middle_of_a_day(ts):
    return 6 * 3600 <= ts - (day_stop(ts) - DAY) <= 18 * 3600


def caught_up_pair(replication):
    """A primary with a day of history and a secondary caught up with it, both running."""
    rep = replication()
    rep.seed(days=1)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    return rep, pri, sec, position


@pytest.mark.slow
def test_secondary_killed_in_the_middle_of_a_day(replication, fault_report):
    fault = Fault(fault_report,
                  'weewxd secondary killed with `kill -9` in the middle of a day while live '
                  'records flow (stock loop_hilo = True: the summaries hold LOOP highs and '
                  'lows), started again',
                  'every archive_day_* row equal to the primary\'s; status: copied')
    rep, pri, sec, position = caught_up_pair(replication)
    killed_at = wait_mid_day(rep, position)
    sec.kill9()
    stopped_at = rep.secondary.last_timestamp()
    assert stopped_at >= killed_at and in_the_middle_of_a_day(stopped_at), stopped_at
    rep.wait_primary_grows(100)                     # the rest of that day, and more

    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    assert position > stopped_at
    rep.wait_live(since=day_stop(position), n=12)   # a midnight after the restart too
    rep.finish(pri, [sec], fault=fault)
    assert rep.requester_status()[MAIN_KEY]['summaries'] == 'copied'


@pytest.mark.slow
def test_primary_killed_in_the_middle_of_a_day(replication, fault_report):
    fault = Fault(fault_report,
                  'weewxd primary killed with `kill -9` in the middle of a day while live '
                  'records flow (stock loop_hilo = True), started again',
                  'every archive_day_* row equal to the primary\'s; status: copied')
    rep, pri, sec, position = caught_up_pair(replication)
    wait_mid_day(rep, position)
    pri.kill9()
    killed_at = rep.primary.last_timestamp()
    assert in_the_middle_of_a_day(killed_at), killed_at
    wait_until(lambda: rep.secondary.last_timestamp() >= killed_at - INTERVAL, 15,
               'the secondary to get what the primary published', describe=rep.describe_sync)

    pri = rep.start_primary()                       # resumes that day where it ended
    rep.wait_live(since=day_stop(killed_at), n=12)  # and goes on past its midnight
    rep.finish(pri, [sec], fault=fault)
    assert rep.requester_status()[MAIN_KEY]['summaries'] == 'copied'


def test_secondary_in_another_unit_system_rebuilds_its_summaries(replication):
    """The secondary's StdConvert converts to METRICWX, the primary is US: the primary's
    summaries of the main binding cannot be stored as they are. The secondary rebuilds its
    own from its archive and says so once, in its log and its status; its archive holds the
    primary's records, converted, and its summaries are what WeeWX builds from those.
    The air-quality binding (no StdConvert for it: its database takes the unit system of
    the records, US) still gets the primary's summaries, copied."""
    rep = replication(aq=True)
    rep.secondary.edit(lambda c: c['StdConvert'].__setitem__('target_unit', 'METRICWX'))
    rep.seed(days=1)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    rep.wait_live(since=day_stop(position), n=12)   # live records across a midnight

    rep.finish(pri, [sec], compare=lambda station: None)      # compared here
    assert _units(rep.secondary, 'wx_binding') == [(weewx.METRICWX,)]
    assert _units(rep.secondary, 'aq_binding') == [(weewx.US,)]
    reference = rep.reference('reference', units='METRICWX', bindings=['wx_binding'])
    for source, binding in ((reference, 'wx_binding'), (rep.primary, 'aq_binding')):
        diffs = compare_databases(source, binding, rep.secondary, binding)
        assert diffs == [], '%s differs:\n%s' % (binding, '\n'.join(diffs))

    lines = [m.groups() for m in re.finditer(REBUILT, rep.secondary.log_text(), re.M)]
    assert len(lines) == 1 and lines[0][0] == MAIN_KEY, lines
    assert lines[0][1] == 'the unit systems differ (primary US, here METRICWX)', lines
    status = rep.requester_status()
    assert (status[MAIN_KEY]['summaries'], status[MAIN_KEY]['summaries_why']) \
        == ('rebuilt', lines[0][1]), status[MAIN_KEY]
    assert (status[AQ_KEY]['summaries'], status[AQ_KEY]['summaries_why']) \
        == ('copied', None), status[AQ_KEY]


def _units(station, binding):
    con = sqlite3.connect(str(station.db_path(binding)))
    try:
        return con.execute('SELECT DISTINCT usUnits FROM archive').fetchall()
    finally:
        con.close()
