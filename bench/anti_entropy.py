"""Anti-entropy benchmark: what one automatic verification's slice of older history costs
the primary on a ten-year database (default: ten years of 5-minute records).

    .venv/bin/python bench/anti_entropy.py [--years 10] [--cycle 30] [--runs 5] [--keep]

The primary's database is one seeded year (tests/support: simulator records, LOOP highs
and lows in the summaries) copied to the following years with SQL, its daily summaries
built for them. With verify_cycle_days = cycle the history is cut into slices
(verify.older_slice); the slice of a day in the middle of the history is what one
verification asks the primary for, one digest request (records and daily summaries).

Printed, each the median of --runs: the primary's wall and CPU time for that digest
(SourceDatabase.digest, as the responder's worker runs it, in short pages), beside a floor
measured in the same run on the same rows: one SELECT of every column of the slice's
records, fully fetched (no hashing); and the ratio.
"""

import argparse
import os
import shutil
import sqlite3
import statistics
import time

import _common as c
from tests.support.station import make_station, seed_history
from user.mqttreplicate import database, target, verify

DAY = 86400


def build(root, years):
    station = make_station(root, 'primary')
    start = int(time.time()) - years * c.YEAR * 300 - DAY
    start -= start % DAY
    t0 = time.monotonic()
    done = 0
    while done < c.YEAR:
        n = min(c.CHUNK, c.YEAR - done)
        seed_history(station, start + done * 300, n)
        done += n
    con = sqlite3.connect(str(station.db_path()))
    names = [row[1] for row in con.execute('PRAGMA table_info(archive)')]
    others = ', '.join(n for n in names if n != 'dateTime')
    copy = 'INSERT INTO archive (dateTime, %s) SELECT dateTime + ?, %s FROM archive ' \
           'WHERE dateTime < ?' % (others, others)
    with con:
        for year in range(1, years):      # the first year's rows, a year on each time
            con.execute(copy, (year * c.YEAR * 300, start + c.YEAR * 300))
    con.close()
    with station.open_manager() as manager:
        target.backfill_day_summary(manager)
        count = manager.getSql('SELECT COUNT(*) FROM archive')[0]
    print('built %d records (%d years) in %.0f s' % (count, years, time.monotonic() - t0),
          flush=True)
    return station


def timed(action, runs):
    walls, cpus = [], []
    for _ in range(runs):
        w, p = time.monotonic(), time.process_time()
        action()
        walls.append(time.monotonic() - w)
        cpus.append(time.process_time() - p)
    return statistics.median(walls), statistics.median(cpus)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--years', type=int, default=10)
    parser.add_argument('--cycle', type=int, default=30)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    args = parser.parse_args()
    print('machine:', c.machine())
    os.environ['TZ'] = 'UTC'
    time.tzset()
    root = c.workdir('anti-entropy')
    try:
        station = build(root, args.years)
        source = database.SourceDatabase(station.manager_dict())
        try:
            oldest = source.first_after(0, 2 ** 40)
            newest = source.newest()
            window_since, _ = verify.window(newest, 7)
            since, until = verify.older_slice(oldest, window_since, args.cycle,
                                              (oldest // DAY) + args.cycle // 2)
            records = source.read_page(since, until, 10 ** 7)
            print('slice: %s to %s, %d days, %d records'
                  % (verify.when(since + 1), verify.when(until), (until - since) // DAY,
                     len(records)), flush=True)
            columns = list(source.columns)
            digest = timed(lambda: source.digest(since, until, DAY, columns, summaries=True),
                           args.runs)
            select = 'SELECT %s FROM archive WHERE dateTime > ? AND dateTime <= ?' \
                % ', '.join(columns)
            floor = timed(lambda: database.fetch_all(source.manager.connection, select,
                                                      (since, until)), args.runs)
        finally:
            source.close()
        print('digest of the slice (records and summaries): %.2f s wall, %.2f s CPU'
              % digest)
        print('floor, one SELECT of the same rows:          %.2f s wall, %.2f s CPU'
              % floor)
        print('ratio (wall): %.1fx; per day of a %d-day cycle: one such digest'
              % (digest[0] / floor[0], args.cycle))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
