"""Writing rows in bulk: one way for every table, SQLite and MySQL.

insert_rows() is the one place that builds the INSERTs of bulk stores, repairs and daily
summaries; run_statements() sends the ones it was asked to keep for later in as few round
trips as the server allows. On MySQL, records go as prepared statements with their values
in binary, pipelined on a server nearby; other rows of numbers are spelled here, not by the
driver.
"""

import array
import collections
import itertools
import logging
import struct
import sys
import time

import weedb

from . import protocol
from .faults import is_termination

log = logging.getLogger(__name__)

MAX_STATEMENT = 4 * 1024 * 1024  # bytes of one multi-row statement, at most (MySQL)
NUMBER_BYTES = 27                # a number or NULL as the driver spells it, at most, and a comma
PIPELINE_ROWS = 100              # rows per prepared statement when they are pipelined
PIPELINE_RTT = 0.002             # seconds: a server nearer than this gets them pipelined
STATEMENTS_KEPT = 16             # prepared statements kept on a connection, at most
EXACT_INT = 10 ** 15 - 1         # the largest integer sent as a double (15 digits)
MAX_PARAMETERS = 65535           # of one prepared statement (MySQL)
PREPARED_CALLS = ('_execute_command', '_read_packet', '_sock')   # PyMySQL's, used here
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE = 0x16, 0x17, 0x19   # MySQL protocol
CLIENT_DEPRECATE_EOF = 1 << 24
MYSQL_TYPE_DOUBLE = b'\x05\x00'   # a parameter's type: a double, signed


def is_mysql(connection):
    return getattr(connection, 'dbtype', None) == 'mysql'


def _server(connection):
    """(statement limit, round trip) of this MySQL connection, read once per connection
    (database.reconnect() forgets them): the server's max_allowed_packet, read three times,
    the shortest of those round trips in seconds."""
    known = getattr(connection, '_replicate_server', None)
    if known is None:
        rtt = float('inf')
        try:
            for _ in range(3):
                started = time.monotonic()
                row = connection.get_variable('max_allowed_packet')
                rtt = min(rtt, time.monotonic() - started)
            server = int(row[1]) if row else MAX_STATEMENT
        except Exception as e:
            if is_termination(e):
                raise
            log.debug('max_allowed_packet not read: %s', e)
            server = 1024 * 1024            # MySQL's smallest default
        client = getattr(getattr(connection, 'connection', None), 'max_allowed_packet', None)
        known = connection._replicate_server = (min(server, client or server, MAX_STATEMENT),
                                                rtt)
    return known


def statement_limit(connection):
    """The largest statement worth sending to this MySQL connection: the server's
    max_allowed_packet, the client's and MAX_STATEMENT."""
    return _server(connection)[0]


def round_trip(connection):
    """The shortest round trip to this MySQL connection's server (seconds): whether
    pipelining statements pays (see _Prepared)."""
    return _server(connection)[1]


def _row_bytes(row):
    """The most bytes row takes in a statement: numbers and NULLs have a bound; a text value
    may be escaped to twice its length."""
    size = 3
    for value in row:
        size += 2 * len(value) + 3 if isinstance(value, (str, bytes)) else NUMBER_BYTES
    return size


def _doubles(values):
    """Floats as PyMySQL spells them (converters.escape_float): repr, with an exponent so
    that the server reads a DOUBLE, not a DECIMAL."""
    return [text if 'e' in text else text + 'e0' for text in map(repr, values)]


def _number_literals(rows):
    """The rows as SQL literals, '(1,2.5e0,NULL)', if every value is an integer, a finite
    float or None (records always are), else None: what the driver would send, spelled a
    column at a time instead of a call per value."""
    columns = []
    for values in zip(*rows):
        kinds = protocol.number_kinds(values, finite=True)
        if kinds is None:
            return None
        if kinds == {int}:
            columns.append(list(map(str, values)))
        elif kinds == {float}:
            columns.append(_doubles(values))
        else:
            doubles = iter(_doubles([v for v in values if v.__class__ is float]))
            columns.append(['NULL' if v is None else next(doubles) if v.__class__ is float
                            else str(v) for v in values])
    return ['(%s)' % ','.join(row) for row in zip(*columns)]


def _chunks(sizes, budget):
    """(start, end) of the runs of consecutive items whose sizes add up to at most budget
    (at least one item each): the rows of each statement."""
    start = 0
    while start < len(sizes):
        end, size = start + 1, sizes[start]
        while end < len(sizes) and size + sizes[end] <= budget:
            size += sizes[end]
            end += 1
        yield start, end
        start = end


def insert_rows(connection, cursor, table, columns, rows, replace=False, later=None,
                records=False):
    """Insert rows (tuples, in the order of columns) into table, through cursor (of
    connection, a weedb connection, in an open transaction).
    columns None: every column of the table, in its order. replace: REPLACE INTO (a row
    with the same primary key is replaced; SQLite and MySQL both know it). later (a list):
    MySQL statements of numbers only are appended to it, for run_statements(), instead of
    being sent. records: rows of an archive table, many and of the same columns again and
    again (MySQL: worth prepared statements).

    SQLite: one prepared statement run for every row (executemany). MySQL (weedb's cursor
    has no executemany, and a statement per row is a round trip each): multi-row
    statements, each within the connection's statement_limit() (see _MySQLInsert)."""
    if not rows:
        return 0
    if not is_mysql(connection):
        sql = _head(table, columns, replace) + '(%s)' % ','.join('?' * len(rows[0]))
        executemany = getattr(cursor, 'executemany', None)
        if executemany is not None:
            executemany(sql, rows)
        else:
            for row in rows:
                cursor.execute(sql, row)
        return len(rows)
    _MySQLInsert(connection, cursor, table, columns, replace, later, records).run(rows)
    return len(rows)


def _head(table, columns, replace, quote=False):
    names = ['`%s`' % c for c in columns] if quote and columns else columns
    return '%s INTO %s%s VALUES ' % ('REPLACE' if replace else 'INSERT', table,
                                     ' (%s)' % ', '.join(names) if names else '')


class _MySQLInsert:
    """One insert_rows() into MySQL: multi-row statements, each within statement_limit().

    Records whose every value a double holds exactly (None, finite floats, integers of up
    to 15 digits: records always are) go, on a PyMySQL connection whose server prepares
    statements, as prepared statements (_Prepared): their values in binary, nothing spelled,
    nothing for the server to parse. Other rows of numbers are spelled here, a column at a
    time (_number_literals), and sent through the PyMySQL cursor beneath weedb's, its
    translation of errors kept (weedb would search each statement of megabytes for the word
    interval: the names are quoted here); with `later` given (a list), those statements are
    appended to it instead, for run_statements(). Rows holding anything else go through the
    driver's escaping."""

    def __init__(self, connection, cursor, table, columns, replace, later, records):
        import weedb.mysql
        self.cursor = cursor
        self.raw = getattr(cursor, 'cursor', None)      # PyMySQL's, under weedb's
        self.escaped_head = _head(table, columns, replace)    # weedb quotes interval
        self.head = _head(table, columns, replace, quote=self.raw is not None)
        self.later = later if self.raw is not None else None
        self.budget = statement_limit(connection) - len(self.head) - 64
        self.execute = cursor.execute if self.raw is None else weedb.mysql.guard(
            self.raw.execute)
        link = getattr(self.raw, 'connection', None)
        self.prepared = None
        if records and later is None and all(hasattr(link, name) for name in PREPARED_CALLS):
            session = _session(link)
            if not session.refused:
                self.prepared = _Prepared(connection, link, session, self.head)

    def run(self, rows):
        if self.prepared is not None and _exact_doubles(rows):
            done = self.prepared.run(rows)
            if done == len(rows):
                return
            rows = rows[done:]          # the server would not prepare the statement
        literals = _number_literals(rows)
        if literals is None:
            # anything but numbers: the driver escapes each value
            one = '(%s)' % ','.join('?' * len(rows[0]))
            for start, end in _chunks([_row_bytes(row) for row in rows], self.budget):
                chunk = rows[start:end]
                self.cursor.execute(self.escaped_head + ','.join([one] * len(chunk)),
                                    [v for row in chunk for v in row])
            return
        for start, end in _chunks([len(literal) + 1 for literal in literals], self.budget):
            sql = self.head + ','.join(literals[start:end])
            if self.later is not None:
                self.later.append(sql)
            else:
                self.execute(sql)


def _exact_doubles(rows):
    """Does a double hold every value of rows exactly, and would the server spell it as
    before in a text column (None, finite floats, ints of up to 15 digits, no bools)?
    Checked a column at a time, in C loops."""
    for values in zip(*rows):
        kinds = protocol.number_kinds(values, finite=True)
        if kinds is None:
            return False
        if int in kinds:
            ints = values if kinds == {int} else [v for v in values if v.__class__ is int]
            if max(ints) > EXACT_INT or min(ints) < -EXACT_INT:
                return False
    return True


class _Session:
    """What one MySQL session has prepared: the statements kept (their ids by head and
    number of rows, oldest first), or why the server refused to prepare one. A connection
    opened again in place (a new socket on the same driver object) is a new session."""

    def __init__(self, sock):
        self.sock = sock
        self.kept = collections.OrderedDict()
        self.refused = None


def _session(link):
    session = getattr(link, '_replicate_session', None)
    if session is None or session.sock is not link._sock:
        session = link._replicate_session = _Session(link._sock)
    return session


class _Prepared:
    """Multi-row INSERTs as prepared statements on a PyMySQL connection (the binary
    protocol: COM_STMT_PREPARE once per shape, then COM_STMT_EXECUTE with every value an
    8-byte double and the NULLs in a bitmap; the server stores a double in an INTEGER column
    as the integer it holds). PyMySQL has no prepared statements: the few commands are
    written here, through its own packet calls, errors translated by weedb.

    On a server less than PIPELINE_RTT away a statement holds PIPELINE_ROWS rows and is
    pipelined: sent without waiting for its result, the next one made while the server
    executes it, the result read before the next is sent (an error stops the rest). Farther
    away a statement holds as many rows as fit: a round trip each is what costs there.
    Statements stay prepared on their session, the last STATEMENTS_KEPT of them. A server
    that refuses to prepare one (max_prepared_stmt_count reached, a proxy without them)
    gets SQL text for the rest of the session, said once in the log.

    `unread` counts the packets the server still owes: whatever interrupts a read (weewxd's
    Terminate) leaves them counted, and they are read before the exception goes on, so
    that the connection's next command gets its own answer."""

    def __init__(self, connection, link, session, head):
        import weedb.mysql
        self.session = session
        self.head = head
        self.limit = statement_limit(connection)
        self.near = round_trip(connection) < PIPELINE_RTT
        self.eof = not getattr(link, 'client_flag', 0) & CLIENT_DEPRECATE_EOF
        self.send = weedb.mysql.guard(link._execute_command)
        self.read_packet = weedb.mysql.guard(link._read_packet)
        self.unread = 0

    def run(self, rows):
        """Insert rows; returns how many went (fewer than all: the server refused to
        prepare a statement, the rest must go as text)."""
        width = len(rows[0])
        fit = max(1, min(MAX_PARAMETERS // width,
                         (self.limit - 64) // (10 * width + width // 8 + 1)))
        step = min(PIPELINE_ROWS, fit) if self.near else fit
        try:
            for start in range(0, len(rows), step):
                chunk = rows[start:start + step]
                values = _binary_values(chunk)
                self.drain()
                statement = self.statement(len(chunk), width)
                if statement is None:
                    return start
                self.send(COM_STMT_EXECUTE, struct.pack('<IBI', statement, 0, 1) + values)
                self.unread = 1
            self.drain()
            return len(rows)
        except BaseException:
            if self.unread:         # the connection stays usable: its answers are read
                try:
                    self.drain()
                except Exception as e:
                    if is_termination(e):
                        raise
            raise

    def read(self):
        """One packet the server owes. An error answer (read whole: it ends the answer)
        is raised as weedb's."""
        try:
            packet = self.read_packet()
        except weedb.DatabaseError:
            self.unread = 0
            raise
        self.unread -= 1
        return packet

    def drain(self):
        """Read what the server still owes: the result of the statement in flight, if any
        (its error is raised here)."""
        while self.unread:
            self.read()

    def statement(self, rows, width):
        """The id of the prepared INSERT of rows rows, prepared now if it is not kept;
        None if the server refuses to prepare it."""
        kept = self.session.kept
        key = (self.head, rows)
        statement = kept.get(key)
        if statement is not None:
            kept.move_to_end(key)
            return statement
        self.send(COM_STMT_PREPARE,
                  self.head + ','.join(['(%s)' % ','.join('?' * width)] * rows))
        self.unread = 1
        try:
            answer = self.read().get_all_data()
        except weedb.DisconnectError:
            raise
        except weedb.DatabaseError as e:
            self.session.refused = e
            log.info('MySQL server refuses to prepare statements (%s): records go as SQL '
                     'text on this connection', e)
            return None
        statement, columns, params = struct.unpack_from('<IHH', answer, 1)
        # their definitions, each count followed by an EOF packet
        self.unread = sum(count + (1 if count and self.eof else 0)
                          for count in (params, columns))
        self.drain()
        kept[key] = statement
        while len(kept) > STATEMENTS_KEPT:
            _, old = kept.popitem(last=False)
            self.send(COM_STMT_CLOSE, struct.pack('<I', old))     # no answer
        return statement


_BITS = bytes.maketrans(b'\x00\x01', b'01')


def _binary_values(rows):
    """COM_STMT_EXECUTE's parameters after its flags: the NULL bitmap, the types (every one
    a DOUBLE) and the values that are not None, little-endian doubles."""
    flat = list(itertools.chain.from_iterable(rows))
    count = len(flat)
    if None in flat:
        nulls = bytes([value is None for value in flat]).translate(_BITS)[::-1]
        bitmap = int(nulls, 2).to_bytes((count + 7) // 8, 'little')
        flat = [value for value in flat if value is not None]
    else:
        bitmap = bytes((count + 7) // 8)
    values = array.array('d', flat)
    if sys.byteorder == 'big':
        values.byteswap()
    return bitmap + b'\x01' + MYSQL_TYPE_DOUBLE * count + values.tobytes()


COM_SET_OPTION = 0x1b           # MySQL protocol: multi-statements on (0) or off (1)


def _multi_statements(raw, on):
    """Switch multi-statements on or off on a PyMySQL connection (COM_SET_OPTION)."""
    raw._execute_command(COM_SET_OPTION, struct.pack('<H', 0 if on else 1))
    raw._read_packet()


def run_statements(connection, cursor, statements):
    """Send statements (SQL text that insert_rows() put in `later`) through cursor, in an
    open transaction: on a PyMySQL connection joined by ';', as few round trips as
    statement_limit() allows (multi-statements switched on for them only); else one by
    one. A round trip per statement is what a server across a network makes slow."""
    if not statements:
        return
    import weedb.mysql
    raw = getattr(cursor, 'cursor', None)
    execute = weedb.mysql.guard(raw.execute)
    link = getattr(raw, 'connection', None)
    if len(statements) == 1 or not all(hasattr(link, name) for name in (
            '_execute_command', '_read_packet')):
        for sql in statements:
            execute(sql)
        return
    nextset = weedb.mysql.guard(raw.nextset)
    weedb.mysql.guard(_multi_statements)(link, True)
    try:
        sizes = [len(sql) + 1 for sql in statements]
        for start, end in _chunks(sizes, statement_limit(connection) - 64):
            execute(';'.join(statements[start:end]))
            while nextset():          # the error of a later statement is raised here
                pass
    finally:
        try:
            _multi_statements(link, False)
        except Exception as e:     # a connection that broke meanwhile: its error is raised
            if is_termination(e):
                raise
            log.debug('multi-statements not switched off: %s', e)


