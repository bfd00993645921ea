"""Unit conversion (SPEC 6.4): records arrive in the target database's unit system."""

import sqlite3

import pytest
import weewx

from tests.integration.harness import (BINDING, START, STEP, assert_same, error_lines,
                                       new_record)
from tests.support.station import seed_history

pytestmark = pytest.mark.integration

COUNT = 600


def column(station, sql, params=()):
    con = sqlite3.connect(str(station.db_path(BINDING)))
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def test_metric_primary_into_us_secondary(rig, broker, caplog):
    """A METRIC primary, a US secondary that already holds one US record: everything arrives
    in US units (degree_C -> degree_F), equal to a US station seeded with the same
    observations, daily summaries included, and no UnitError."""
    primary = rig.primary(broker, count=COUNT, units='METRIC', batch_size=100)
    assert column(primary, 'SELECT DISTINCT usUnits FROM archive') == [(weewx.METRIC,)]
    secondary = rig.secondary(broker, page_size=200)            # a US station
    seed_history(secondary, START, 1, units='US', loop_hilo=False)   # the first record, US
    # US, every record, its summaries rebuilt: the primary's (in other units, with LOOP
    # highs and lows) cannot be copied, so the secondary builds them as this one did
    reference = rig.station('reference')
    seed_history(reference, START, COUNT, units='US', loop_hilo=False)

    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)

    # and a live record, converted too
    ts = START + COUNT * STEP
    record = new_record(ts, units='METRIC')
    with primary.open_manager(BINDING) as manager:
        manager.addRecord(record, log_success=False)
    responder.publish_live(responder.bindings['weewx/wx_binding'],
                           {k: v for k, v in record.items() if v is not None}, ts - STEP)
    node.wait_position(ts, timeout=5)
    seed_history(reference, ts, 1, units='US', loop_hilo=False)
    node.stop()

    assert column(secondary, 'SELECT DISTINCT usUnits FROM archive') == [(weewx.US,)]
    probe = START + 300 * STEP
    celsius = column(primary, 'SELECT outTemp FROM archive WHERE dateTime = ?', (probe,))[0][0]
    fahrenheit = column(secondary, 'SELECT outTemp FROM archive WHERE dateTime = ?',
                        (probe,))[0][0]
    assert fahrenheit == pytest.approx(celsius * 9 / 5 + 32, rel=1e-9)
    assert fahrenheit != pytest.approx(celsius)
    # weewx's km/h -> mph and mph -> km/h factors are not exact inverses (2.5e-6)
    assert_same(reference, secondary, rel_tol=1e-5, abs_tol=1e-6)
    assert error_lines(caplog) == []
    assert not any('UnitError' in r.getMessage() for r in caplog.records)


def test_metric_primary_into_empty_us_secondary_from_the_command_line(rig, broker):
    """`request --once` into an empty US secondary: the database must come out US, or the
    secondary's weewxd (StdConvert target_unit = US) raises UnitError on its first record."""
    primary = rig.primary(broker, count=50, units='METRIC')
    secondary = rig.secondary(broker)                            # US, no database yet
    assert secondary.load()['StdConvert']['target_unit'] == 'US'
    rig.start_responder(primary)
    result = secondary.run_cli('request', '--once', timeout=60)
    assert result.returncode == 0, result.stderr
    assert secondary.count_records() == 50
    assert column(secondary, 'SELECT DISTINCT usUnits FROM archive') == [(weewx.US,)]
