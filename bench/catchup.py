"""Catch-up benchmark: N records (default one year of 5-minute records) into an empty
secondary, standalone (`request --once`) and under weewxd.

    .venv/bin/python bench/catchup.py [--records 105120] [--mode standalone|weewxd|both]
                                      [--db sqlite|mysql]

Prints the time, the rate, the peak memory of both sides and the broker messages per record.
With --db mysql the same records also go into a MariaDB secondary, on a private server the
bench starts (tests/support/mariadb.py, the server's default durability), right after the
SQLite run, and the MariaDB time is printed beside the SQLite time with their ratio.
"""

import argparse
import re
import shutil
import subprocess
import sys
import time

import _common as c


def standalone(broker, primary, secondary, records):
    responder = c.cli(primary, 'respond', stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    t0 = time.monotonic()
    proc = subprocess.run(['/usr/bin/time', '-f', 'peak-rss-kib %M', sys.executable, '-m',
                           'user.mqttreplicate', '--config', str(secondary.config_path),
                           'request', '--once'], env=c.cli_env(), capture_output=True,
                          text=True, cwd=str(c.REPO / 'bin'))
    elapsed = time.monotonic() - t0
    responder_rss = c.peak_rss_kib(responder.pid)
    responder.terminate()
    responder.wait(10)
    out = proc.stdout + proc.stderr
    summary = re.search(r'replicated (\d+) records in ([\d.]+) s \((\d+) records/s\)', out)
    messages = re.search(r'messages received (\d+)', out)
    rss = re.search(r'peak-rss-kib (\d+)', out)
    if proc.returncode != 0 or not summary:
        print(out[-3000:])
        raise SystemExit('request --once failed (%s)' % proc.returncode)
    stored = secondary.count_records()
    print('standalone: %s (process %.1f s); stored %d; requester peak RSS %.0f MB; '
          'responder peak RSS %.0f MB; broker messages per record %.4f'
          % (summary.group(0), elapsed, stored, int(rss.group(1)) / 1024,
             responder_rss / 1024, int(messages.group(1)) / max(stored, 1)), flush=True)
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


def run_modes(args, broker, primary, secondary, label, fresh):
    """The selected modes into one secondary; fresh() empties it. {mode: seconds}."""
    times = {}
    if args.mode in ('standalone', 'both'):
        print('--- %s, standalone' % label, flush=True)
        times['standalone'] = standalone(broker, primary, secondary, args.records)
    if args.mode == 'both':
        fresh()
    if args.mode in ('weewxd', 'both'):
        print('--- %s, under weewxd' % label, flush=True)
        times['weewxd'] = under_weewxd(broker, primary, secondary, args.records)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=c.YEAR)
    parser.add_argument('--mode', choices=('standalone', 'weewxd', 'both'), default='both')
    parser.add_argument('--db', choices=('sqlite', 'mysql'), default='sqlite',
                        help='mysql: also into a MariaDB secondary, and the ratio')
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    args = parser.parse_args()
    print('machine:', c.machine())
    root = c.workdir('catchup')
    server = None
    broker, primary, secondary = c.make_pair(root, args.records)
    try:
        def fresh_sqlite():
            shutil.rmtree(secondary.root / 'archive', ignore_errors=True)
        sqlite_times = run_modes(args, broker, primary, secondary, 'into SQLite',
                                 fresh_sqlite)
        if args.db == 'mysql':
            from tests.support.mariadb import MariaDB
            server = MariaDB(root / 'mariadb', fast=False)
            version = server.execute('SELECT VERSION()')[0][0]
            print('MariaDB %s on 127.0.0.1:%d (private, default durability)'
                  % (version, server.port), flush=True)
            server.configure(secondary)
            mysql_times = run_modes(args, broker, primary, secondary, 'into MariaDB',
                                    lambda: server.configure(secondary))
            for mode, seconds in mysql_times.items():
                print('%s: %d records into MariaDB %.1f s, into SQLite %.1f s: ratio %.2f'
                      % (mode, args.records, seconds, sqlite_times[mode],
                         seconds / sqlite_times[mode]), flush=True)
    finally:
        if server is not None:
            server.stop()
        c.tear_down(root, broker, (primary, secondary), args.keep)


if __name__ == '__main__':
    main()
