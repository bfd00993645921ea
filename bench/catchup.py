"""Catch-up benchmark: N records (default one year of 5-minute records) into an empty
secondary, standalone (`request --once`) and under weewxd.

    .venv/bin/python bench/catchup.py [--records 105120] [--mode standalone|weewxd|both]
                                      [--db sqlite|mysql] [--rtt MS]

Prints the time, the rate, the peak memory of both sides and the broker messages per record.

It also measures two floors on the same records (read back from the primary's database after
seeding), in the same run, right before each catch-up into SQLite, and prints that catch-up's
time as a ratio to both (wall clock, time.monotonic):

* WeeWX's own bulk load, into a new SQLite database made from the secondary's binding (same
  schema, a temporary file): what `weectl database transfer` does (a plain
  `weewx.manager.Manager` opened with `open_with_create`, `addRecord(records)`, 200 records
  per transaction), then what `weectl database rebuild-daily` does
  (`DaySummaryManager.backfill_day_summary(trans_days=20)`); transfer itself leaves the daily
  summaries out.
* The raw floor: the records (their non-null values) as one JSON list of objects, encoded and
  decoded, then one `executemany` INSERT (of the columns that hold values) into an archive
  table of the secondary's columns, in one transaction of Python's sqlite3, in a temporary
  file database. No daily summaries.

With --db mysql the same records also go into a MariaDB secondary, on a private server the
bench starts (tests/support/mariadb.py, the server's default durability), right after the
SQLite run, and the MariaDB time is printed beside the SQLite time with their ratio, with
the statements and transactions the server counted per page (its global Questions and
Com_commit: the server is the bench's own). With --rtt MS the MariaDB run is repeated
through a TCP proxy that holds every read MS/2 milliseconds each way (a server across a
network; `tc netem` is not in every kernel).
"""

import argparse
import copy
import gc
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque

import _common as c


def standalone(broker, primary, secondary, records):
    responder = c.cli(primary, 'respond', stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    responder_cpu = c.cpu_seconds(responder.pid)     # its start-up left out
    t0 = time.monotonic()
    proc = subprocess.run(['/usr/bin/time', '-f', 'peak-rss-kib %M cpu %U %S', sys.executable,
                           '-m',
                           'user.mqttreplicate', '--config', str(secondary.config_path),
                           'request', '--once'], env=c.cli_env(), capture_output=True,
                          text=True, cwd=str(c.REPO / 'bin'))
    elapsed = time.monotonic() - t0
    responder_rss = c.peak_rss_kib(responder.pid)
    responder_cpu = c.cpu_seconds(responder.pid) - responder_cpu
    responder.terminate()
    responder.wait(10)
    out = proc.stdout + proc.stderr
    summary = re.search(r'replicated (\d+) records in ([\d.]+) s \((\d+) records/s\)', out)
    messages = re.search(r'messages received (\d+)', out)
    rss = re.search(r'peak-rss-kib (\d+) cpu ([\d.]+) ([\d.]+)', out)
    if proc.returncode != 0 or not summary:
        print(out[-3000:])
        raise SystemExit('request --once failed (%s)' % proc.returncode)
    stored = secondary.count_records()
    print('standalone: %s (process %.1f s); stored %d; requester peak RSS %.0f MB, CPU %.2f s; '
          'responder peak RSS %.0f MB, CPU %.2f s; broker messages per record %.4f'
          % (summary.group(0), elapsed, stored, int(rss.group(1)) / 1024,
             float(rss.group(2)) + float(rss.group(3)), responder_rss / 1024, responder_cpu,
             int(messages.group(1)) / max(stored, 1)), flush=True)
    summaries = re.search(r'daily summaries of (\d+) days updated with (\d+) records in '
                          r'([\d.]+) s', out)
    if summaries:       # the requester's own log line, when it logs one
        print('standalone: of which daily summaries of %s days %s s (the requester\'s log)'
              % (summaries.group(1), summaries.group(3)), flush=True)
    assert stored == records, 'stored %d of %d' % (stored, records)
    return float(summary.group(2))


def under_weewxd(broker, primary, secondary, records):
    responder = c.cli(primary, 'respond', stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    t0 = time.monotonic()
    weewxd = secondary.start_weewxd()
    weewxd.wait_for_log(r'driver: \S+ caught up at (\d+) \((\d+) records\)',
                        timeout=600)
    elapsed = time.monotonic() - t0
    rss = c.peak_rss_kib(weewxd.pid) if hasattr(weewxd, 'pid') else None
    weewxd.stop()
    responder.terminate()
    responder.wait(10)
    stored = secondary.count_records()
    print('under weewxd: %d records caught up in %.1f s from weewxd start (%.0f records/s)%s'
          % (stored, elapsed, stored / elapsed,
             '; weewxd peak RSS %.0f MB' % (rss / 1024) if rss else ''), flush=True)
    assert stored == records, 'stored %d of %d' % (stored, records)
    return elapsed


def read_primary(primary):
    """Every record of the primary's archive, as weewx reads them (dicts of every column)."""
    import weewx.manager
    manager_dict = primary.manager_dict()
    with weewx.manager.Manager.open(manager_dict['database_dict'],
                                    manager_dict['table_name']) as manager:
        return list(manager.genBatchRecords())


def weewx_bulk_load(secondary, records, directory):
    """WeeWX's own bulk load of records into a new database of the secondary's schema.

    `weectl database transfer` (weectllib/database_actions.transfer_database) then
    `weectl database rebuild-daily` (rebuild_daily), without their prompts and progress
    output. Returns (transfer seconds, rebuild-daily seconds).
    """
    import weewx.manager
    manager_dict = copy.deepcopy(secondary.manager_dict())
    database_dict = dict(manager_dict['database_dict'], SQLITE_ROOT=str(directory),
                         database_name='weewx-bulk.sdb')
    manager_dict['database_dict'] = database_dict
    table = manager_dict['table_name']
    logging.disable(logging.INFO)          # as transfer does
    try:
        t0 = time.monotonic()
        with weewx.manager.Manager.open_with_create(database_dict, table_name=table,
                                                    schema=manager_dict['schema']) as dest:
            stored = dest.addRecord(records)
        t1 = time.monotonic()
        with weewx.manager.Manager.open(database_dict, table) as db:
            sqlkeys = db.sqlkeys
        day_schemas = [(e, 'scalar') for e in sqlkeys
                       if e not in ('dateTime', 'usUnits', 'interval')]
        if 'windSpeed' in sqlkeys:
            day_schemas += [('wind', 'vector')]
        manager_dict['schema'] = {'day_summaries': day_schemas}
        with weewx.manager.open_manager(manager_dict, initialize=True) as dbm:
            nrecs, _ = dbm.backfill_day_summary(trans_days=20, progress_fn=None)
        t2 = time.monotonic()
    finally:
        logging.disable(logging.NOTSET)
    assert stored == nrecs == len(records), (stored, nrecs, len(records))
    return t1 - t0, t2 - t1


def raw_floor(secondary, records, directory):
    """The records through JSON and one executemany into a table of the secondary's columns.

    Returns (JSON seconds, SQLite seconds).
    """
    manager_dict = secondary.manager_dict()
    table_schema = manager_dict['schema']['table']
    values = [{k: v for k, v in record.items() if v is not None} for record in records]
    path = directory / 'raw.sdb'
    t0 = time.monotonic()
    decoded = json.loads(json.dumps(values, separators=(',', ':')))
    t1 = time.monotonic()
    present = set().union(*decoded)     # the INSERT names the columns that hold values
    columns = [name for name, _ in table_schema if name in present]
    connection = sqlite3.connect(str(path), isolation_level=None)
    for pragma, value in (manager_dict['database_dict'].get('pragmas') or {}).items():
        connection.execute('PRAGMA %s=%s' % (pragma, value))
    connection.execute('CREATE TABLE %s (%s)' % (manager_dict['table_name'], ', '.join(
        '%s %s' % column for column in table_schema)))
    connection.execute('BEGIN')
    connection.executemany('INSERT INTO %s (%s) VALUES (%s)' % (
        manager_dict['table_name'], ', '.join(columns), ', '.join('?' * len(columns))),
        (tuple(map(row.get, columns)) for row in decoded))
    connection.execute('COMMIT')
    connection.close()
    t2 = time.monotonic()
    stored = sqlite3.connect(str(path)).execute(
        'SELECT COUNT(*) FROM %s' % manager_dict['table_name']).fetchone()[0]
    assert stored == len(records), (stored, len(records))
    return t1 - t0, t2 - t1


def measure_floors(primary, secondary, root, records):
    """Both floors on the primary's records. {'weewx': seconds, 'raw': seconds}."""
    directory = root / 'floors'
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    print('--- floors (load average %.2f)' % os.getloadavg()[0], flush=True)
    t0 = time.monotonic()
    rows = read_primary(primary)
    read = time.monotonic() - t0
    assert len(rows) == records, 'the primary holds %d of %d' % (len(rows), records)
    # What the bench holds (the records read, what seeding left) is kept out of the
    # collector's passes, so that the floors do not pay for this process's own heap.
    gc.collect()
    gc.freeze()
    transfer, rebuild = weewx_bulk_load(secondary, rows, directory)
    print('floor, weewx bulk load: %.1f s = transfer (Manager.addRecord) %.1f s '
          '+ rebuild-daily (backfill_day_summary) %.1f s' % (transfer + rebuild, transfer,
                                                              rebuild), flush=True)
    encode, insert = raw_floor(secondary, rows, directory)
    print('floor, raw: %.1f s = JSON encode and decode %.1f s + one executemany and commit '
          '%.1f s (reading the %d records from the primary, %.1f s, in neither)'
          % (encode + insert, encode, insert, len(rows), read), flush=True)
    gc.unfreeze()
    del rows
    gc.collect()
    shutil.rmtree(directory, ignore_errors=True)
    return {'weewx': transfer + rebuild, 'raw': encode + insert}


def print_against_floors(floors, mode, seconds):
    print('floors: weewx bulk load %.1f s, raw %.1f s; ours %s %.1f s = %.2fx raw, '
          '%.2fx weewx bulk' % (floors['weewx'], floors['raw'], mode, seconds,
                                seconds / floors['raw'], seconds / floors['weewx']), flush=True)


class DelayProxy:
    """Forwards a loopback port to (host, port), each read held `delay` seconds before it
    is sent on (both ways): a round trip `2 * delay` longer, bandwidth untouched. Counts
    the commands clients send (MySQL packets with sequence number 0): round trips."""

    def __init__(self, host, port, delay):
        self.target = (host, port)
        self.delay = delay
        self.commands = 0
        self.server = socket.create_server(('127.0.0.1', 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for src, dst in ((client, upstream), (upstream, client)):
                held, ready = deque(), threading.Condition()
                threading.Thread(target=self._read, args=(src, held, ready, src is client),
                                 daemon=True).start()
                threading.Thread(target=self._send, args=(dst, held, ready),
                                 daemon=True).start()

    def _read(self, src, held, ready, up):
        header, skip = b'', 0            # MySQL packets: 3 bytes length, 1 byte sequence
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b''
            at = 0
            while up and at < len(data):
                if skip:
                    n = min(skip, len(data) - at)
                    skip -= n
                    at += n
                    continue
                more = data[at:at + 4 - len(header)]
                header += more
                at += len(more)
                if len(header) == 4:
                    skip = int.from_bytes(header[:3], 'little')
                    self.commands += header[3] == 0
                    header = b''
            with ready:
                held.append((time.monotonic() + self.delay, data))
                ready.notify()
            if not data:
                return

    @staticmethod
    def _send(dst, held, ready):
        while True:
            with ready:
                while not held:
                    ready.wait()
                due, data = held.popleft()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    def stop(self):
        self.server.close()


def server_counts(server):
    """The server's global statement and commit counters, and its CPU seconds."""
    rows = server.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', "
                          "'Com_commit', 'Com_insert', 'Com_replace', 'Com_delete', "
                          "'Com_select', 'Com_create_table', 'Com_stmt_execute')")
    counts = {name: int(value) for name, value in rows}
    counts['cpu'] = c.cpu_seconds(server.pid)
    return counts


def print_counts(before, after, records, page_size=5000):
    pages = -(-records // page_size)
    delta = {k: after[k] - before[k] for k in after}
    print('  server: %d statements (%.0f per page of %d records: %d INSERT (%d of them '
          'prepared), %d REPLACE, %d DELETE, %d SELECT, %d CREATE TABLE in all), %d commits '
          '(%.1f per page); server CPU %.2f s'
          % (delta['Questions'], delta['Questions'] / pages, page_size, delta['Com_insert'],
             delta['Com_stmt_execute'], delta['Com_replace'], delta['Com_delete'],
             delta['Com_select'], delta['Com_create_table'], delta['Com_commit'],
             delta['Com_commit'] / pages, delta['cpu']), flush=True)


def run_modes(args, broker, primary, secondary, label, fresh, floors=None, server=None):
    """The selected modes into one secondary; fresh() empties it. {mode: seconds}.

    With floors (a function measuring them), the floors are measured right before each mode
    (the machine's load changes) and the mode's time is printed as a ratio to them.
    """
    times = {}
    if args.mode in ('standalone', 'both'):
        measured = floors() if floors else None
        print('--- %s, standalone' % label, flush=True)
        counts = server_counts(server) if server else None
        times['standalone'] = standalone(broker, primary, secondary, args.records)
        if server:
            print_counts(counts, server_counts(server), args.records)
        if measured:
            print_against_floors(measured, 'standalone', times['standalone'])
    if args.mode == 'both':
        fresh()
    if args.mode in ('weewxd', 'both'):
        measured = floors() if floors else None
        print('--- %s, under weewxd' % label, flush=True)
        counts = server_counts(server) if server else None
        times['weewxd'] = under_weewxd(broker, primary, secondary, args.records)
        if server:
            print_counts(counts, server_counts(server), args.records)
        if measured:
            print_against_floors(measured, 'weewxd', times['weewxd'])
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=c.YEAR)
    parser.add_argument('--mode', choices=('standalone', 'weewxd', 'both'), default='both')
    parser.add_argument('--db', choices=('sqlite', 'mysql'), default='sqlite',
                        help='mysql: also into a MariaDB secondary, and the ratio')
    parser.add_argument('--rtt', type=float, default=0,
                        help='with --db mysql: also into MariaDB through a proxy adding this '
                        'round trip (milliseconds)')
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    args = parser.parse_args()
    os.environ['TZ'] = 'UTC'       # the stations' processes run in UTC: the same days
    time.tzset()
    print('machine:', c.machine())
    root = c.workdir('catchup')
    server = None
    broker, primary, secondary = c.make_pair(root, args.records)
    try:
        def fresh_sqlite():
            shutil.rmtree(secondary.root / 'archive', ignore_errors=True)
        sqlite_times = run_modes(args, broker, primary, secondary, 'into SQLite',
                                 fresh_sqlite,
                                 lambda: measure_floors(primary, secondary, root, args.records))
        if args.db == 'mysql':
            from tests.support.mariadb import MariaDB
            server = MariaDB(root / 'mariadb', fast=False)
            version = server.execute('SELECT VERSION()')[0][0]
            print('MariaDB %s on 127.0.0.1:%d (private, default durability)'
                  % (version, server.port), flush=True)
            server.configure(secondary)
            mysql_times = run_modes(args, broker, primary, secondary, 'into MariaDB',
                                    lambda: server.configure(secondary), server=server)
            for mode, seconds in mysql_times.items():
                print('%s: %d records into MariaDB %.1f s, into SQLite %.1f s: ratio %.2f'
                      % (mode, args.records, seconds, sqlite_times[mode],
                         seconds / sqlite_times[mode]), flush=True)
            if args.rtt:
                proxy = DelayProxy(server.host, server.port, args.rtt / 2000)

                def far_port(config):
                    config['DatabaseTypes']['MySQL']['port'] = str(proxy.port)

                def through_proxy():
                    server.configure(secondary)
                    secondary.edit(far_port)
                through_proxy()
                far = run_modes(args, broker, primary, secondary,
                                'into MariaDB %.0f ms away' % args.rtt, through_proxy,
                                server=server)
                proxy.stop()
                pages = -(-args.records // 5000) * len(far)
                print('  round trips (commands the clients sent through the proxy): %d, '
                      '%.0f per page' % (proxy.commands, proxy.commands / pages), flush=True)
                for mode, seconds in far.items():
                    print('%s: %d records into MariaDB with a %.0f ms round trip %.1f s '
                          '(on loopback %.1f s, into SQLite %.1f s)'
                          % (mode, args.records, args.rtt, seconds, mysql_times[mode],
                             sqlite_times[mode]), flush=True)
    finally:
        if server is not None:
            server.stop()
        c.tear_down(root, broker, (primary, secondary), args.keep)


if __name__ == '__main__':
    main()
