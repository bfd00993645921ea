"""The throwaway-station helpers: create, seed, run weewxd, compare databases."""

import os
import signal
import sqlite3
import time

import pytest

from tests.support.station import (PACKAGE_DIR, STARTED, TERMINATING, compare_databases,
                                   seed_history)

pytestmark = pytest.mark.integration

DAY = 86400
START = 1700000000 - 1700000000 % DAY          # 2023-11-14 00:00 UTC
TWO_DAYS = 2 * 288


def execute(station, sql, params=()):
    con = sqlite3.connect(str(station.db_path()))
    try:
        with con:
            con.execute(sql, params)
    finally:
        con.close()


def test_make_station(stations):
    st = stations('primary', wal=True)
    config = st.load()
    assert config['debug'] == '0' and config['retry_wait'] == '2'
    assert config['Logging']['handlers']['file']['filename'] == 'log/{process_name}.log'
    assert config['Logging']['loggers']['user.mqttreplicate']['level'] == 'DEBUG'
    services = config['Engine']['Services']
    assert services['report_services'] == [] and services['restful_services'] == []
    assert config['StdArchive']['archive_delay'] == '1'
    assert config['Databases']['archive_sqlite']['pragmas']['journal_mode'] == 'WAL'
    assert 'WEEWX_ROOT' not in config                      # weecfg.read_config fills it in
    assert st.config_dict()['WEEWX_ROOT'] == str(st.root)
    link = st.root / 'bin' / 'user' / 'mqttreplicate'
    assert link.is_symlink() and os.readlink(link) == str(PACKAGE_DIR)
    assert st.db_path() == st.root / 'archive' / 'weewx.sdb'

    st.add_service('restful_services', 'user.mqttreplicate.MQTTResponder')
    st.add_service('restful_services', 'user.mqttreplicate.MQTTResponder')
    assert st.load()['Engine']['Services']['restful_services'] == \
        ['user.mqttreplicate.MQTTResponder']


def test_seed_history_and_compare(stations, tmp_path):
    st = stations('primary')
    first, last = seed_history(st, START, TWO_DAYS)
    assert (first, last) == (START, START + (TWO_DAYS - 1) * 300)
    assert st.count_records() == TWO_DAYS and st.last_timestamp() == last
    con = sqlite3.connect(str(st.db_path()))
    try:
        row = con.execute('SELECT interval, usUnits, outTemp FROM archive LIMIT 1').fetchone()
        assert row[0] == 5 and row[1] == 1 and row[2] is not None
        days = con.execute('SELECT dateTime, count FROM archive_day_outTemp').fetchall()
        # 00:00 belongs to the previous day; 2 days from 00:00 span 3 archive days
        assert [c for _, c in days] == [1, 288, 287]
    finally:
        con.close()

    copy = stations.adopt(st.copy(tmp_path, 'copy'))
    assert compare_databases(st, 'wx_binding', copy, 'wx_binding') == []
    assert compare_databases(st.config_path, 'wx_binding', st.config_dict(), 'wx_binding') == []

    # Float noise below the tolerance is not a difference.
    execute(copy, 'UPDATE archive SET outTemp = outTemp * (1 + 1e-12) WHERE dateTime = ?',
            (START + 300,))
    assert compare_databases(st, 'wx_binding', copy, 'wx_binding') == []

    execute(copy, 'UPDATE archive SET outTemp = outTemp + 1 WHERE dateTime = ?', (START + 600,))
    execute(copy, 'DELETE FROM archive WHERE dateTime = ?', (last,))
    execute(copy, 'UPDATE archive_day_barometer SET max = 99 WHERE dateTime = ?', (START,))
    diffs = compare_databases(st, 'wx_binding', copy, 'wx_binding')
    text = '\n'.join(diffs)
    assert 'archive: %d rows in A' % TWO_DAYS in text
    assert 'archive: dateTime %d' % (START + 600) in text and 'outTemp' in text
    assert 'archive: dateTime %d (2023-11-15 23:55:00) only in A' % last in text
    assert 'day_barometer: dateTime %d' % START in text and 'max: ' in text

    assert len(compare_databases(st, 'wx_binding', copy, 'wx_binding', max_diffs=1)) == 2


def test_seed_out_of_order_rebuilds_summaries(stations):
    in_order = stations('in_order')
    seed_history(in_order, START, TWO_DAYS)
    backwards = stations('backwards')
    seed_history(backwards, START + DAY, 288)
    seed_history(backwards, START, 288)
    assert compare_databases(in_order, 'wx_binding', backwards, 'wx_binding') == []


def test_seed_metric_station(stations):
    st = stations('metric', units='METRIC')
    seed_history(st, START, 12)
    con = sqlite3.connect(str(st.db_path()))
    try:
        assert con.execute('SELECT DISTINCT usUnits FROM archive').fetchall() == [(16,)]
    finally:
        con.close()


def test_weewxd_start_stop(stations):
    st = stations('primary')
    seed_history(st, START, 24)
    weewxd = st.start_weewxd()
    weewxd.wait_for_log(STARTED, timeout=30)
    assert weewxd.alive()
    assert weewxd.stop() == -signal.SIGTERM
    assert not weewxd.alive()
    assert TERMINATING in weewxd.log_text()
    assert 'Traceback' not in st.log_text()
    assert 'Using configuration file' in weewxd.output_text()

    # A second run of the same station only sees its own log lines.
    again = st.start_weewxd()
    again.wait_for_log(STARTED, timeout=30)
    assert again.log_text().count('Initializing weewxd') == 1
    assert st.log_text().count('Initializing weewxd') == 2
    assert again.kill9() == -signal.SIGKILL


def test_wait_for_log_fails_fast_when_weewxd_dies(stations):
    st = stations('broken')
    st.edit(lambda c: c['Station'].__setitem__('station_type', 'NoSuchDriver'))
    weewxd = st.start_weewxd()
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match='exited'):
        weewxd.wait_for_log(STARTED, timeout=30)
    assert time.monotonic() - t0 < 20
    assert weewxd.returncode not in (None, 0)


def test_generator_primary_runs_fast(stations):
    """A simulator in generator mode produces archive records as fast as the engine stores."""
    st = stations('fast', archive_interval=300)
    st.set_simulator(mode='generator', start=START, loop_interval=60)
    weewxd = st.start_weewxd()
    weewxd.wait_for_log(STARTED, timeout=30)
    deadline = time.monotonic() + 30
    while st.count_records() < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    weewxd.stop()
    assert st.count_records() >= 20
    first = sqlite3.connect(str(st.db_path())).execute(
        'SELECT MIN(dateTime) FROM archive').fetchone()[0]
    assert first == START + 300
