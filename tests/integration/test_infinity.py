"""Non-finite values (issue 19, item 6): SQLite keeps inf and -inf in a REAL column. A
primary holding them replicates them as they are into a SQLite secondary, in every layout a
requester may ask for, catch-up and live; into MariaDB, which cannot hold them, the record is
stored with that value NULL and one warning naming record and column. Never a stuck
catch-up, a gap, or a verification that finds the same difference every turn."""

import logging
import math
import sqlite3

import pytest

from tests.integration.harness import (BINDING, START, STEP, assert_same, configure,
                                       error_lines)
from tests.integration.test_summaries import loop_highs

pytestmark = pytest.mark.integration

COUNT = 3000
INF_AT = {START + 1000 * STEP: ('outTemp', math.inf),
          START + 2500 * STEP: ('windchill', -math.inf)}


def with_infinities(station):
    """Two records of the primary holding an infinity, and an overflowed daily sum."""
    con = sqlite3.connect(str(station.db_path(BINDING)))
    with con:
        for ts, (column, value) in INF_AT.items():
            con.execute('UPDATE archive SET %s = ? WHERE dateTime = ?' % column, (value, ts))
        con.execute('UPDATE archive_day_outTemp SET sum = ? WHERE dateTime = (SELECT '
                    'MIN(dateTime) FROM archive_day_outTemp)', (math.inf,))
    con.close()


def values_at(station, ts, column):
    con = sqlite3.connect(str(station.db_path(BINDING)))
    try:
        return con.execute('SELECT %s FROM archive WHERE dateTime = ?' % column,
                           (ts,)).fetchone()[0]
    finally:
        con.close()


@pytest.mark.parametrize('layout', [None, 'columns', 'packed'])
def test_a_sqlite_secondary_gets_every_infinity_as_it_is(rig, broker, monkeypatch, caplog,
                                                         layout):
    from user.mqttreplicate import requester
    monkeypatch.setattr(requester, 'LAYOUT', layout)
    primary = rig.primary(broker, count=COUNT, batch_size=200)
    loop_highs(primary)
    with_infinities(primary)
    secondary = rig.secondary(broker, page_size=700)
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(60)
    node.wait_verified()
    assert node.replica.position == START + (COUNT - 1) * STEP
    assert secondary.count_records() == COUNT
    for ts, (column, value) in INF_AT.items():
        assert values_at(secondary, ts, column) == value
    assert node.replica.verifier.repaired == 0
    node.stop()
    assert_same(primary, secondary)
    assert error_lines(caplog, logging.WARNING) == []


def test_a_mariadb_secondary_stores_null_and_says_so_once(rig, broker, mariadb, caplog):
    primary = rig.primary(broker, count=COUNT, batch_size=200)
    with_infinities(primary)
    secondary = rig.station('secondary')
    mariadb.configure(secondary)
    configure(secondary, broker, 'Requester', clientid='my-secondary', page_size=700)
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(60)
    node.wait_verified()
    assert secondary.count_records() == COUNT
    assert node.replica.verifier.repaired == 0          # NULL for inf is not a difference
    node.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and 'cannot hold' in r.getMessage()]
    for ts, (column, value) in INF_AT.items():
        assert len([w for w in warnings if column in w and str(ts) in w]) == 1, warnings
    with secondary.open_manager(BINDING) as manager:
        for ts, (column, _) in INF_AT.items():
            assert manager.getSql('SELECT %s FROM archive WHERE dateTime = %%s' % column,
                                  (ts,))[0] is None
    assert error_lines(caplog) == []


def test_a_sqlite_secondary_holding_null_for_an_infinity_is_not_in_sync(rig, broker, caplog):
    """The nemesis's 30-minute run: a correction from NULL to inf on the primary was never
    repaired, as an infinity counted as NULL in every digest. Now only a secondary that
    cannot hold one (MySQL) asks for that."""
    from user.mqttreplicate import config as cfg
    from user.mqttreplicate import verify
    primary = rig.primary(broker, count=COUNT, batch_size=200)
    with_infinities(primary)
    secondary = rig.secondary(broker, page_size=700)
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(60)
    node.wait_verified()
    node.stop()
    ts, (column, _) = next(iter(INF_AT.items()))
    con = sqlite3.connect(str(secondary.db_path(BINDING)))
    with con:
        con.execute('UPDATE archive SET %s = NULL WHERE dateTime = ?' % column, (ts,))
    con.close()
    config_dict = secondary.config_dict()
    lines = []
    verifier = verify.Verifier(cfg.parse_requester(config_dict), config_dict, timeout=10,
                               out=lines.append)
    assert verifier.run(10, repair=True) is True, lines
    assert any('records here' in line for line in lines), lines
    assert values_at(secondary, ts, column) == math.inf
    assert_same(primary, secondary)
