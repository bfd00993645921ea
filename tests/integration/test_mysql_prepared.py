"""Records into MySQL as prepared statements (sqlbulk._Prepared: the binary protocol written
over PyMySQL's packets), against the private MariaDB server: every value comes back exactly
as it was given, NULLs where they were, with statements pipelined (a server nearby) or as
large as they fit (a server far away); an error in the middle of a pipeline is raised as
weedb's, the transaction rolls back and the connection stays usable; prepared statements
do not pile up on the server; rows a double cannot hold exactly go the text way."""

import random

import pytest
import weedb
import weedb.mysql

from user.mqttreplicate import sqlbulk

pytestmark = pytest.mark.integration

HARD = [0.0, 0.1 + 0.2, 1e16, 1e-7, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
        -2.5, 123456789.0, 30.040040292733185, 1 / 3, -1e-300, 4.9e-324 * 3]
COLUMNS = ['dateTime', 'usUnits', 'interval', 'a', 'b', 'c', 'd']


def rows_of(count, seed, start=1_700_000_000):
    """count rows: an integer key, two small integers (one of them the column named
    interval), and four REAL columns of hard floats, integers and NULLs at random."""
    rng = random.Random(seed)

    def value():
        pick = rng.random()
        if pick < 0.3:
            return None
        if pick < 0.4:
            return rng.randrange(-sqlbulk.EXACT_INT, sqlbulk.EXACT_INT + 1)
        if pick < 0.7:
            return rng.choice(HARD)
        return rng.uniform(-1e6, 1e6)
    return [(start + i * 300, 1, 5) + tuple(value() for _ in range(4)) for i in range(count)]


@pytest.fixture
def table(mariadb):
    """(connection, name of the table): a fresh table of COLUMNS in a fresh database."""
    name = mariadb.new_database()
    mariadb.execute('CREATE DATABASE %s' % name)
    mariadb.execute('CREATE TABLE archive (`dateTime` INTEGER NOT NULL PRIMARY KEY, '
                    '`usUnits` INTEGER NOT NULL, `interval` INTEGER NOT NULL, a REAL, b REAL, '
                    'c REAL, d REAL)', database=name)
    connection = weedb.mysql.connect(host=mariadb.host, port=mariadb.port, user=mariadb.user,
                                     password=mariadb.password, database_name=name)
    yield connection, name
    connection.close()


def insert(connection, rows, table='archive', columns=COLUMNS, records=True):
    """insert_rows() of records in a transaction of their own."""
    with weedb.Transaction(connection) as cursor:
        return sqlbulk.insert_rows(connection, cursor, table, columns, rows, records=records)


def stored(mariadb, name):
    return [tuple(row) for row in mariadb.execute('SELECT * FROM archive ORDER BY dateTime',
                                                  database=name)]


def executes(monkeypatch):
    """Record the commands sent on every PyMySQL connection: [(command, bytes)]."""
    import pymysql.connections
    sent = []
    real = pymysql.connections.Connection._execute_command

    def record(self, command, sql):
        sent.append((command, len(sql)))
        return real(self, command, sql)
    monkeypatch.setattr(pymysql.connections.Connection, '_execute_command', record)
    return sent


@pytest.mark.parametrize('near', [True, False], ids=['pipelined', 'as-large-as-fit'])
def test_every_value_comes_back_exactly(mariadb, table, monkeypatch, near):
    connection, name = table
    monkeypatch.setattr(sqlbulk, 'PIPELINE_RTT', 1e9 if near else 0.0)
    sent = executes(monkeypatch)
    rows = rows_of(1003, seed=7)
    rows[5] = (rows[5][0], 1, 5, None, None, None, None)           # every value NULL
    edge = sqlbulk.EXACT_INT
    rows[6] = (rows[6][0], 1, 5, edge, -edge, 0, 1)                 # integers at the edge
    assert insert(connection, rows) == 1003
    back = stored(mariadb, name)
    assert back == [tuple(float(v) if isinstance(v, int) and i > 2 else v
                          for i, v in enumerate(row)) for row in rows]
    assert [repr(v) for row in back for v in row] == \
        [repr(float(v) if isinstance(v, int) and i > 2 else v)
         for row in rows for i, v in enumerate(row)]
    prepared = [size for command, size in sent if command == sqlbulk.COM_STMT_EXECUTE]
    texts = [size for command, size in sent if command == 0x03
             and size > 1000]                                       # no INSERT as text
    assert texts == []
    # pipelined: statements of PIPELINE_ROWS rows (the last one shorter); else one for all
    assert len(prepared) == (11 if near else 1)


def test_a_small_max_allowed_packet_splits_the_statements(make_mariadb, monkeypatch):
    server = make_mariadb(max_allowed_packet=16384)
    name = server.new_database()
    server.execute('CREATE DATABASE %s' % name)
    server.execute('CREATE TABLE archive (`dateTime` INTEGER NOT NULL PRIMARY KEY, '
                   '`usUnits` INTEGER NOT NULL, `interval` INTEGER NOT NULL, a REAL, b REAL, '
                   'c REAL, d REAL)', database=name)
    monkeypatch.setattr(sqlbulk, 'PIPELINE_RTT', 0.0)               # as large as fit
    sent = executes(monkeypatch)
    connection = weedb.mysql.connect(host=server.host, port=server.port, user=server.user,
                                     password=server.password, database_name=name)
    try:
        rows = rows_of(2000, seed=8)
        insert(connection, rows)
    finally:
        connection.close()
    assert len(stored(server, name)) == 2000
    prepared = [size for command, size in sent if command == sqlbulk.COM_STMT_EXECUTE]
    assert len(prepared) > 2000 * 7 * 10 // 16384                   # split to fit
    assert max(size for _, size in sent) <= 16384
    assert max(prepared) > 16384 / 2                                # as many rows as fit


def test_an_error_in_the_pipeline_rolls_back_and_the_connection_goes_on(mariadb, table,
                                                                         monkeypatch):
    connection, name = table
    monkeypatch.setattr(sqlbulk, 'PIPELINE_RTT', 1e9)
    first = rows_of(10, seed=1)
    insert(connection, first)
    later = rows_of(500, seed=2, start=first[-1][0] + 300)
    later[333] = first[4]                       # a key stored already, in the 4th statement
    sent = executes(monkeypatch)
    with pytest.raises(weedb.IntegrityError):
        insert(connection, later)
    assert len(stored(mariadb, name)) == 10     # the statements before it rolled back too
    # none was sent after the one that failed
    assert [command for command, _ in sent].count(sqlbulk.COM_STMT_EXECUTE) == 4
    later[333] = (later[332][0] + 1,) + later[333][1:]
    insert(connection, later)                  # the same connection goes on
    assert len(stored(mariadb, name)) == 510


def test_prepared_statements_do_not_pile_up(mariadb, table):
    connection, name = table
    start = 1_700_000_000
    for count in range(1, 3 * sqlbulk.STATEMENTS_KEPT):    # a statement of each size
        rows = rows_of(count, seed=count, start=start)
        start += count * 300
        insert(connection, rows)
    cursor = connection.cursor()
    cursor.execute("SHOW SESSION STATUS LIKE 'Com_stmt_close'")
    closed = int(cursor.fetchone()[1])
    cursor.execute("SHOW SESSION STATUS LIKE 'Com_stmt_prepare'")
    prepared = int(cursor.fetchone()[1])
    cursor.close()
    assert prepared == 3 * sqlbulk.STATEMENTS_KEPT - 1
    assert prepared - closed == sqlbulk.STATEMENTS_KEPT
    assert len(stored(mariadb, name)) == sum(range(1, 3 * sqlbulk.STATEMENTS_KEPT))


def test_what_a_double_cannot_hold_goes_as_text(mariadb, table, monkeypatch):
    connection, name = table
    sent = executes(monkeypatch)
    rows = [(1, 1, 5, 2 ** 53 + 1, 0.5, None, 1), (2, 1, 5, None, 1.5, -2 ** 62, None)]
    insert(connection, rows)
    assert not any(command == sqlbulk.COM_STMT_EXECUTE for command, _ in sent)
    assert stored(mariadb, name) == [(1, 1, 5, float(2 ** 53 + 1), 0.5, None, 1.0),
                                     (2, 1, 5, None, 1.5, float(-2 ** 62), None)]


def test_only_records_go_prepared(mariadb, table, monkeypatch):
    """Daily summaries (a table each, a few rows each: a prepared statement would be used
    once) go as text."""
    connection, name = table
    sent = executes(monkeypatch)
    insert(connection, rows_of(300, seed=9), records=False)
    assert not any(command == sqlbulk.COM_STMT_PREPARE for command, _ in sent)
    assert len(stored(mariadb, name)) == 300


def test_other_column_types_get_what_the_text_way_gave_them(mariadb, monkeypatch):
    """A schema of one's own: text, DECIMAL, FLOAT and BIGINT columns hold, from a prepared
    statement, what the SQL text gave them."""
    name = mariadb.new_database()
    mariadb.execute('CREATE DATABASE %s' % name)
    columns = ['dateTime', 'usUnits', 'interval', 't', 'm', 'f', 'g']
    for table in ('prepared', 'spelled'):
        mariadb.execute('CREATE TABLE %s (`dateTime` INTEGER NOT NULL PRIMARY KEY, '
                        '`usUnits` INTEGER NOT NULL, `interval` INTEGER NOT NULL, '
                        't VARCHAR(40), m DECIMAL(30,10), f FLOAT, g BIGINT)' % table,
                        database=name)
    rng = random.Random(11)
    values = [0, 1, -1, 7, 10 ** 14, sqlbulk.EXACT_INT, -sqlbulk.EXACT_INT, 0.5, -2.5, 1.5,
              1 / 3, 0.1 + 0.2, 1e-7, 123456.789, 1e14 + 0.5, None]
    rows = [(1_700_000_000 + i * 300, 1, 5) + tuple(rng.choice(values) for _ in range(4))
            for i in range(400)]
    connection = weedb.mysql.connect(host=mariadb.host, port=mariadb.port, user=mariadb.user,
                                     password=mariadb.password, database_name=name)
    sent = executes(monkeypatch)
    try:
        insert(connection, rows, 'prepared', columns)
        assert any(command == sqlbulk.COM_STMT_EXECUTE for command, _ in sent)
        insert(connection, rows, 'spelled', columns, records=False)
    finally:
        connection.close()
    prepared, spelled = (mariadb.execute('SELECT * FROM %s ORDER BY dateTime' % table,
                                         database=name) for table in ('prepared', 'spelled'))
    assert len(prepared) == 400
    assert [tuple(map(repr, row)) for row in prepared] == \
        [tuple(map(repr, row)) for row in spelled]


def test_a_server_that_will_not_prepare_gets_text(make_mariadb, monkeypatch, caplog):
    """max_prepared_stmt_count = 0 (or a proxy without prepared statements): one line in
    the log, every record stored as text, no second try on that session."""
    server = make_mariadb()
    with server.root() as root:
        with root.cursor() as cursor:
            cursor.execute('SET GLOBAL max_prepared_stmt_count = 0')
    name = server.new_database()
    server.execute('CREATE DATABASE %s' % name)
    server.execute('CREATE TABLE archive (`dateTime` INTEGER NOT NULL PRIMARY KEY, '
                   '`usUnits` INTEGER NOT NULL, `interval` INTEGER NOT NULL, a REAL, b REAL, '
                   'c REAL, d REAL)', database=name)
    sent = executes(monkeypatch)
    connection = weedb.mysql.connect(host=server.host, port=server.port, user=server.user,
                                     password=server.password, database_name=name)
    caplog.set_level('INFO', logger='user.mqttreplicate')
    try:
        rows = rows_of(600, seed=12)
        insert(connection, rows[:300])
        insert(connection, rows[300:])
    finally:
        connection.close()
    assert [tuple(r) for r in server.execute('SELECT * FROM archive ORDER BY dateTime',
                                             database=name)] == \
        [tuple(float(v) if isinstance(v, int) and i > 2 else v for i, v in enumerate(row))
         for row in rows]
    assert [command for command, _ in sent].count(sqlbulk.COM_STMT_PREPARE) == 1
    assert not any(command == sqlbulk.COM_STMT_EXECUTE for command, _ in sent)
    lines = [r.getMessage() for r in caplog.records if 'prepare' in r.getMessage()]
    assert len(lines) == 1 and 'max_prepared_stmt_count' in lines[0], lines


@pytest.mark.parametrize('where', ['execute', 'prepare'])
def test_a_read_interrupted_leaves_the_connection_in_step(mariadb, table, monkeypatch, where):
    """weewxd's Terminate raised while the engine thread waits for the server (the result
    of a statement in a pipeline, or the answer to a PREPARE): what the server owes is read
    before the exception goes on, so that the next command gets its own answer."""
    import pymysql.connections
    connection, name = table
    monkeypatch.setattr(sqlbulk, 'PIPELINE_RTT', 1e9)
    commands = []
    real_command = pymysql.connections.Connection._execute_command
    real_read = pymysql.connections.Connection._read_packet

    class Terminate(Exception):
        pass

    def command(self, code, sql):
        commands.append([code, 0])
        return real_command(self, code, sql)

    def read(self, *args, **kwargs):
        code, reads = commands[-1]
        commands[-1][1] += 1
        executes = [c for c, _ in commands].count(sqlbulk.COM_STMT_EXECUTE)
        # before any byte of: the third EXECUTE's result, or the 40th packet of the
        # PREPARE's answer (a parameter's definition)
        if (where == 'execute' and code == sqlbulk.COM_STMT_EXECUTE and executes == 3) or \
                (where == 'prepare' and code == sqlbulk.COM_STMT_PREPARE and reads == 39):
            commands[-1][0] = None
            raise Terminate()
        return real_read(self, *args, **kwargs)
    monkeypatch.setattr(pymysql.connections.Connection, '_execute_command', command)
    monkeypatch.setattr(pymysql.connections.Connection, '_read_packet', read)
    with pytest.raises(Terminate):
        insert(connection, rows_of(1000, seed=5))
    assert None in [c for c, _ in commands]             # it was interrupted where meant
    cursor = connection.cursor()
    cursor.execute('SELECT 42')
    assert list(cursor.fetchone()) == [42]
    cursor.close()
    assert stored(mariadb, name) == []


def test_a_failure_while_a_statement_is_in_flight_leaves_the_connection_usable(
        mariadb, table, monkeypatch):
    """Something fails here (weewxd's Terminate, say) while the server executes the
    statement before: its result is read all the same, so the next command gets its own."""
    connection, name = table
    monkeypatch.setattr(sqlbulk, 'PIPELINE_RTT', 1e9)
    real = sqlbulk._binary_values
    calls = []

    def third_fails(rows):
        calls.append(len(rows))
        if len(calls) == 3:
            raise RuntimeError('stopped while a statement is in flight')
        return real(rows)
    monkeypatch.setattr(sqlbulk, '_binary_values', third_fails)
    with pytest.raises(RuntimeError):
        insert(connection, rows_of(500, seed=3))
    monkeypatch.setattr(sqlbulk, '_binary_values', real)
    assert stored(mariadb, name) == []
    cursor = connection.cursor()
    cursor.execute('SELECT COUNT(*) FROM archive')
    assert list(cursor.fetchone()) == [0]
    cursor.close()
    insert(connection, rows_of(500, seed=3))
    assert len(stored(mariadb, name)) == 500


def test_a_connection_opened_again_in_place_prepares_again(mariadb, table):
    """database.reconnect() opens a new session on the same driver object: the statements
    prepared on the old session are gone from the server, and not used."""
    from user.mqttreplicate import database
    connection, name = table
    rows = rows_of(200, seed=4)
    insert(connection, rows[:100])
    database.reconnect(connection)
    insert(connection, rows[100:])
    assert len(stored(mariadb, name)) == 200
