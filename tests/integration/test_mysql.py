"""MySQL / MariaDB on either side, against a real server (the private one of
tests/support/mariadb.py): SQLite into MariaDB, MariaDB into SQLite, MariaDB into MariaDB;
catch-up, live records, a second binding, verify and repair, unit conversion, and the
faults a MySQL server brings (restarted under the secondary or the primary, a small
max_allowed_packet, missing grants). Every test ends with the two databases equal row by
row, archive and daily summaries (compare_databases reads MySQL through weedb)."""

import logging
import time

import pytest
import weedb
import weewx

from tests.integration.harness import (BINDING, DAY, KEY, START, STEP, add_binding,
                                       add_to_primary, assert_same, configure, error_lines,
                                       new_record, read_for_live, wait_until)
from tests.integration.test_live import FakeEngine
from tests.support.measure import Fault, in_process
from tests.support.station import compare_databases, seed_history
from user.mqttreplicate import database, sqlbulk
from user.mqttreplicate.responder import MQTTResponder

pytestmark = pytest.mark.integration

COUNT = 600             # about two days of 5-minute records
LAST = START + (COUNT - 1) * STEP
EXTRA = 'extra_binding'
EXTRA_KEY = 'weewx/' + EXTRA


def mysql_station(rig, server, name, units='US', count=0, bindings=(BINDING,)):
    """A station whose bindings are on server (fresh databases), seeded with count
    records."""
    station = rig.station(name, units=units)
    for binding in bindings:
        server.configure(station, binding)
    if count:
        seed_history(station, START, count)
    return station


def publish_new(responder, primary, ts, units='US'):
    """A new record on the primary, published live as the service does."""
    add_to_primary(primary, [new_record(ts, units)])
    record, prev, days = read_for_live(primary, ts)
    responder.publish_live(responder.bindings[KEY], record, prev, days)


def catch_up_and_follow(rig, broker, primary, secondary, units='US'):
    """Catch-up, then three live records; the requester stopped again."""
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    assert node.replica.position == LAST
    for i in (1, 2, 3):
        publish_new(responder, primary, LAST + i * STEP, units)
        node.wait_position(LAST + i * STEP, timeout=10)
    node.stop()
    return responder, node


def test_sqlite_primary_into_mariadb_secondary(rig, broker, mariadb, caplog):
    primary = rig.primary(broker, count=COUNT, batch_size=200)
    secondary = rig.station('secondary')
    name = mariadb.configure(secondary)
    configure(secondary, broker, 'Requester', clientid='my-secondary', page_size=500)
    catch_up_and_follow(rig, broker, primary, secondary)
    assert secondary.count_records() == COUNT + 3
    tables = {row[0] for row in mariadb.execute('SHOW TABLES', database=name)}
    assert 'archive' in tables and 'archive_day_outTemp' in tables
    assert_same(primary, secondary)
    assert error_lines(caplog, logging.WARNING) == []


def test_metric_mariadb_primary_into_us_sqlite_secondary(rig, broker, mariadb, caplog):
    """MariaDB into SQLite, converted: a METRIC primary on MariaDB, read by the responder as
    a user that may only SELECT (docs/install.md); a US secondary that already holds a US
    record. Everything arrives in US units, equal to a US station seeded with the same
    observations, daily summaries included."""
    primary = mysql_station(rig, mariadb, 'primary', units='METRIC')
    seed_history(primary, START, COUNT, units='METRIC')
    name = primary.manager_dict()['database_dict']['database_name']
    mariadb.execute("CREATE USER IF NOT EXISTS 'primary_reader'@'127.0.0.1' "
                    "IDENTIFIED BY 'reader-pw'")
    mariadb.execute("GRANT SELECT ON %s.* TO 'primary_reader'@'127.0.0.1'" % name)
    responder_config = rig.station('responder-config', units='METRIC')   # the same database
    mariadb.configure(responder_config, database_name=name, user='primary_reader',
                      password='reader-pw')
    configure(responder_config, broker, 'Responder', clientid='my-primary', batch_size=200)
    secondary = rig.secondary(broker, page_size=500)
    seed_history(secondary, START, 1, units='US', loop_hilo=False)
    reference = rig.station('reference')        # (summaries rebuilt, as the secondary's are)
    seed_history(reference, START, COUNT + 3, units='US', loop_hilo=False)

    responder = rig.start_responder(responder_config)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    for i in (1, 2, 3):               # stored by the primary's engine, read by the responder
        publish_new(responder, primary, LAST + i * STEP, units='METRIC')
        node.wait_position(LAST + i * STEP, timeout=10)
    node.stop()
    assert secondary.db_path().exists()
    with secondary.open_manager() as manager:
        assert tuple(manager.getSql('SELECT MIN(usUnits), MAX(usUnits) FROM archive')) == \
            (weewx.US, weewx.US)
    # weewx's km/h -> mph and mph -> km/h factors are not exact inverses (2.5e-6)
    assert_same(reference, secondary, rel_tol=1e-5, abs_tol=1e-6)
    assert error_lines(caplog) == []


def test_mariadb_into_mariadb_two_bindings(rig, broker, mariadb, caplog):
    """Both stations on the same server (each its own databases): main and a second binding,
    stored into the binding the secondary names, then a live record of each through the
    service."""
    primary = rig.station('primary')
    mariadb.configure(primary, BINDING)
    add_binding(primary, EXTRA, 'unused.sdb')
    mariadb.configure(primary, EXTRA)
    seed_history(primary, START, COUNT)
    seed_history(primary, START - 30, 300, binding=EXTRA)
    configure(primary, broker, 'Responder', clientid='my2-primary', batch_size=200,
              other_bindings={EXTRA: {}})
    secondary = rig.station('secondary')
    mariadb.configure(secondary, BINDING)
    add_binding(secondary, 'copy_binding', 'unused.sdb')
    mariadb.configure(secondary, 'copy_binding')
    configure(secondary, broker, 'Requester', clientid='my2-secondary', page_size=400,
              other_bindings={EXTRA: {'secondary_data_binding': 'copy_binding'}})

    engine = FakeEngine(primary.config_dict())
    service = MQTTResponder(engine, primary.config_dict())
    try:
        assert service.responder.transport.wait_connected(10)
        node = rig.start_requester(secondary)
        node.wait_caught_up(30)
        assert node.requester.replicas[EXTRA_KEY].stored == 300
        ts = LAST + STEP
        engine.db_binder.get_manager(EXTRA).addRecord(new_record(ts - 30), log_success=False)
        record = new_record(ts)
        engine.db_binder.get_manager(BINDING).addRecord(record, log_success=False)
        engine.dispatch(weewx.Event(weewx.NEW_ARCHIVE_RECORD, record=record,
                                    origin='hardware'))
        node.wait_position(ts, timeout=10)
        wait_until(lambda: node.requester.replicas[EXTRA_KEY].position == ts - 30, 10,
                   'the live record of the second binding')
        node.stop()
    finally:
        service.shutDown()
        engine.db_binder.close()
    assert_same(primary, secondary)
    diffs = compare_databases(primary, EXTRA, secondary, 'copy_binding')
    assert diffs == [], '\n'.join(diffs)
    assert error_lines(caplog, logging.WARNING) == []


def test_verify_and_repair_a_mariadb_secondary(rig, broker, mariadb):
    primary = rig.primary(broker, count=3 * 288)
    responder = rig.start_responder(primary)
    secondary = rig.station('secondary')
    name = mariadb.configure(secondary)
    configure(secondary, broker, 'Requester', clientid='myv-secondary', page_size=500)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    node.stop()
    assert_same(primary, secondary)
    assert responder.counters['rejected'] == 0

    mariadb.execute('DELETE FROM archive WHERE dateTime > %s AND dateTime <= %s',
                    (START + DAY + 3600, START + DAY + 7200), database=name)
    mariadb.execute('UPDATE archive SET outTemp = outTemp + 0.001 WHERE dateTime = %s',
                    (START + 2 * DAY + 600,), database=name)
    with pytest.raises(AssertionError):
        assert_same(primary, secondary)
    found = secondary.run_cli('--connect-timeout', '10', 'verify', '--days', '10')
    assert found.returncode == 1, found.stdout + found.stderr
    assert found.stdout.count('differs') == 2, found.stdout
    repaired = secondary.run_cli('--connect-timeout', '10', 'verify', '--days', '10',
                                 '--repair')
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stdout.count('records)') == 2, repaired.stdout     # two days of records
    assert_same(primary, secondary)              # archive and daily summaries


# ------------------------------------------------------------------------------------------------
# faults
# ------------------------------------------------------------------------------------------------

def test_secondary_server_restarted_in_the_middle_of_a_catchup(rig, broker, make_mariadb,
                                                               caplog, fault_report):
    fault = Fault(fault_report, "secondary's MariaDB server restarted during a catch-up",
                  'reconnected, nothing lost or stored twice, summaries equal')
    server = make_mariadb()
    primary = rig.primary(broker, count=2000, batch_size=100)
    secondary = rig.station('secondary')
    server.configure(secondary)
    configure(secondary, broker, 'Requester', clientid='myr-secondary', page_size=100,
              page_timeout=5)
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    wait_until(lambda: node.requester.progress_count >= 500, 30, 'the first pages')
    server.restart()
    at_restart = node.requester.progress_count
    with fault.settling(lambda: in_process(primary, secondary, caplog,
                                           stored=node.replica.stored)) as figures:
        node.wait_caught_up(90)
    node.stop()
    assert at_restart < 2000, 'the catch-up ended before the server restarted'
    figures.assert_clean()
    assert secondary.count_records() == 2000
    assert_same(primary, secondary)
    messages = [r.getMessage() for r in caplog.records]
    assert any('connection lost' in m and 'reconnecting' in m for m in messages)
    assert any(m.endswith("': reconnected") for m in messages)
    assert error_lines(caplog) == []


def test_primary_server_restarted_the_responder_recovers(rig, broker, make_mariadb, caplog,
                                                         fault_report):
    """The primary's server restarts in the middle of a catch-up: its workers reconnect (or
    open a new connection for the page asked again) and the catch-up completes; the
    service's NEW_ARCHIVE_RECORD handler, on the engine's now broken connection, never
    raises into the engine."""
    fault = Fault(fault_report, "primary's MariaDB server restarted during a catch-up",
                  'responder recovers, no exception into the engine, databases equal')
    server = make_mariadb()
    primary = mysql_station(rig, server, 'primary', count=1500)
    configure(primary, broker, 'Responder', clientid='myp-primary', batch_size=100)
    secondary = rig.secondary(broker, page_size=100, page_timeout=5)
    engine = FakeEngine(primary.config_dict())
    service = MQTTResponder(engine, primary.config_dict())
    try:
        assert service.responder.transport.wait_connected(10)
        engine_manager = engine.db_binder.get_manager(BINDING)     # as StdArchive holds it
        node = rig.start_requester(secondary)
        wait_until(lambda: node.requester.progress_count >= 500, 30, 'the first pages')
        server.restart()
        with fault.settling(lambda: in_process(primary, secondary, caplog,
                                               stored=node.replica.stored)) as figures:
            node.wait_caught_up(90)
        node.stop()
        figures.assert_clean()
        assert_same(primary, secondary)
        # The engine's own connection died with the restart (WeeWX's StdArchive would fail
        # on it and weewxd restart the engine): the service's handler, on that connection,
        # logs and returns; it never raises into the engine.
        ts = START + 1500 * STEP
        add_to_primary(primary, [new_record(ts)])
        engine.dispatch(weewx.Event(weewx.NEW_ARCHIVE_RECORD, record=new_record(ts),
                                    origin='hardware'))
        assert engine_manager is engine.db_binder.get_manager(BINDING)
        assert any('cannot publish %s record %s' % (KEY, ts) in line
                   for line in error_lines(caplog))
        assert service.responder.transport.connected.is_set()
    finally:
        service.shutDown()
        engine.db_binder.close()


def test_max_allowed_packet_smaller_than_a_batch(rig, broker, make_mariadb, caplog,
                                                monkeypatch):
    """A page of 500 records is about 300 KB of INSERT: with max_allowed_packet = 64 KiB
    every command fits (each one seen as the server got it): the records' prepared
    statements (PIPELINE_ROWS rows each) and the summaries' REPLACEs."""
    import pymysql.connections
    import pymysql.cursors
    sent = []                               # (command, bytes sent) of every command
    replaces = []                           # (bytes sent, rows in it) of the summaries'
    real_command = pymysql.connections.Connection._execute_command
    real_execute = pymysql.cursors.Cursor.execute

    def command(self, code, sql):
        sent.append((code, len(sql)))
        return real_command(self, code, sql)

    def execute(self, sql, args=None):      # every statement as text, as the server gets it
        result = real_execute(self, sql, args)
        for one in self._executed.split(';'):
            if one.replace('`', '').startswith('REPLACE INTO archive_day_'):
                replaces.append((len(one.encode('utf-8')),
                                 one.split(' VALUES ', 1)[1].count('),(') + 1))
        return result
    monkeypatch.setattr(pymysql.connections.Connection, '_execute_command', command)
    monkeypatch.setattr(pymysql.cursors.Cursor, 'execute', execute)

    server = make_mariadb(max_allowed_packet=65536)
    primary = rig.primary(broker, count=COUNT, batch_size=500)
    secondary = rig.station('secondary')
    server.configure(secondary)
    configure(secondary, broker, 'Requester', clientid='mym-secondary', page_size=500)
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    node.stop()
    assert_same(primary, secondary)
    assert error_lines(caplog) == []
    with secondary.open_manager() as manager:
        assert sqlbulk.statement_limit(manager.connection) == 65536
    assert max(size for _, size in sent) <= 65536
    records = [size for code, size in sent if code == sqlbulk.COM_STMT_EXECUTE]
    assert 0 < len(records) < COUNT / 10                  # many rows per statement
    assert sum(rows for _, rows in replaces) > 200       # the summaries went as text


def test_user_without_the_grants_gets_one_clear_sentence(rig, broker, mariadb, caplog):
    """A user that may only read the secondary's database: one line naming the grants the
    secondary needs, and nothing stored; with those grants (docs/install.md) it works."""
    name = mariadb.new_database()
    mariadb.execute('CREATE DATABASE %s' % name)
    mariadb.execute("CREATE USER IF NOT EXISTS 'reader'@'127.0.0.1' IDENTIFIED BY 'reader-pw'")
    mariadb.execute("GRANT SELECT ON %s.* TO 'reader'@'127.0.0.1'" % name)
    primary = rig.primary(broker, count=300)
    secondary = rig.station('secondary')
    mariadb.configure(secondary, database_name=name, user='reader', password='reader-pw')
    configure(secondary, broker, 'Requester', clientid='myg-secondary')
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    sentence = 'needs CREATE, INSERT, UPDATE, DELETE, SELECT on database %s' % name

    def needs():
        return [r.getMessage() for r in caplog.records if sentence in r.getMessage()]
    wait_until(needs, 20, 'the sentence naming the grants')
    time.sleep(2)                            # the writer keeps trying: still one sentence
    assert len(needs()) == 1, needs()
    assert "user 'reader'" in needs()[0]
    assert mariadb.execute('SHOW TABLES', database=name) == ()

    # with those grants (docs/install.md) the secondary catches up on its next try
    mariadb.execute("GRANT CREATE, INSERT, UPDATE, DELETE, SELECT ON %s.* TO "
                    "'reader'@'127.0.0.1'" % name)
    node.wait_caught_up(60)
    node.stop()
    assert_same(primary, secondary)
    assert len(needs()) == 1


def test_responder_user_without_select_is_told_it_needs_select(rig, mariadb):
    """The primary's side needs SELECT only, and says so."""
    primary = mysql_station(rig, mariadb, 'primary', count=10)
    name = primary.manager_dict()['database_dict']['database_name']
    mariadb.execute("CREATE USER IF NOT EXISTS 'nobody'@'127.0.0.1' IDENTIFIED BY 'nobody-pw'")
    reader = rig.station('reader')
    mariadb.configure(reader, database_name=name, user='nobody', password='nobody-pw')
    with pytest.raises(weedb.PermissionError) as raised:
        database.SourceDatabase(reader.manager_dict())
    assert "user 'nobody' needs SELECT on database %s" % name in str(raised.value)


def test_statements_joined_in_one_round_trip_keep_errors_and_transactions(mariadb):
    """run_statements(): several statements in one round trip; an error in a later one is
    raised as weedb's, the transaction rolls back, multi-statements are off afterwards."""
    import weedb.mysql
    name = mariadb.new_database()
    mariadb.execute('CREATE DATABASE %s' % name)
    mariadb.execute('CREATE TABLE t (dateTime INTEGER PRIMARY KEY, v REAL)', database=name)
    connection = weedb.mysql.connect(host=mariadb.host, port=mariadb.port, user=mariadb.user,
                                     password=mariadb.password, database_name=name)
    try:
        with weedb.Transaction(connection) as cursor:
            later = []
            sqlbulk.insert_rows(connection, cursor, 't', ['dateTime', 'v'],
                                 [(1, 1.5), (2, None)], later=later)
            sqlbulk.insert_rows(connection, cursor, 't', ['dateTime', 'v'], [(3, 1e-5)],
                                 replace=True, later=later)
            assert len(later) == 2
            sqlbulk.run_statements(connection, cursor, later)
        assert mariadb.execute('SELECT * FROM t ORDER BY dateTime', database=name) == (
            (1, 1.5), (2, None), (3, 1e-5))
        with pytest.raises(weedb.IntegrityError):
            with weedb.Transaction(connection) as cursor:
                sqlbulk.run_statements(connection, cursor, [
                    'INSERT INTO t VALUES (4, 0e0)', 'INSERT INTO t VALUES (1, 0e0)'])
        assert len(mariadb.execute('SELECT * FROM t', database=name)) == 3
        with pytest.raises(weedb.DatabaseError):
            connection.execute('SELECT 1; SELECT 2')
        cursor = connection.cursor()
        cursor.execute('SELECT COUNT(*) FROM t')         # the connection is usable
        assert list(cursor.fetchone()) == [3]
        cursor.close()
    finally:
        connection.close()
