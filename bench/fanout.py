"""Fan-out benchmark: 1, 5 and 20 empty secondaries catching up the same history at once
from one responder (default one year of 5-minute records).

    .venv/bin/python bench/fanout.py [--records 105120] [--secondaries 1,5,20]
                                     [--without-cache] [--keep]

For each number of secondaries: a fresh responder (`respond`, so its page cache starts
empty) and that many empty secondaries, each a `request --once` process of its own,
started together. Prints the responder's CPU seconds (user + system, read from
/proc/<pid>/stat, its idle start-up left out), the wall time until the last secondary is
done, the peak memory (VmHWM / ru_maxrss) of the responder and of the largest secondary,
and the pages the responder served and shared. The first run is the floor of the others:
each row gives its responder CPU as a ratio to it (target for 20: at most 3).

--without-cache runs each count again with a responder whose page cache keeps nothing (the
responder before the cache), for comparison.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import _common as c

NO_CACHE = ('import sys, user.mqttreplicate.responder as r, user.mqttreplicate.pagecache as p;'
            ' r.PageCache = lambda: p.PageCache(max_pages=0);'
            ' from user.mqttreplicate.cli import main; sys.exit(main())')


def start_responder(primary, log_path, cache=True):
    code = ['-m', 'user.mqttreplicate'] if cache else ['-c', NO_CACHE]
    log = open(log_path, 'w')
    proc = subprocess.Popen([sys.executable] + code + ['--config', str(primary.config_path),
                                                       'respond'],
                            env=c.cli_env(), stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()          # "responding for ...": connected
    if not line.startswith('responding'):
        raise SystemExit('the responder did not start: %r (see %s)' % (line, log_path))
    time.sleep(0.5)
    return proc, log



def run(primary, template, root, n, records, cache=True):
    tag = '%d%s' % (n, '' if cache else 'nc')
    stations = c.secondaries(template, root, n, tag, 'fanout')
    responder, log = start_responder(primary, root / ('responder-%s.log' % tag), cache)
    try:
        cpu0 = c.cpu_seconds(responder.pid)
        t0 = time.monotonic()
        procs = []
        for i, station in enumerate(stations):
            out = open(root / ('requester-%s-%d.log' % (tag, i)), 'w')
            # /usr/bin/time reads the peak memory: a child of this process would inherit
            # this process's own (the seeding) in its ru_maxrss
            rss_file = root / ('requester-%s-%d.rss' % (tag, i))
            procs.append((subprocess.Popen(
                ['/usr/bin/time', '-f', '%M', '-o', str(rss_file), sys.executable, '-m',
                 'user.mqttreplicate', '--config', str(station.config_path), 'request',
                 '--once'], env=c.cli_env(), stdout=out, stderr=subprocess.STDOUT,
                cwd=str(c.REPO / 'bin')), out, rss_file))
        codes = [proc.wait() for proc, _, _ in procs]
        wall = time.monotonic() - t0
        rss = [int(rss_file.read_text().split()[-1]) for _, _, rss_file in procs]
        for _, out, _ in procs:
            out.close()
        cpu = c.cpu_seconds(responder.pid) - cpu0
        responder_rss = c.peak_rss_kib(responder.pid)
    finally:
        responder.terminate()
        responder.wait(20)
        log.close()
    text = (root / ('responder-%s.log' % tag)).read_text()
    counters = dict((k, int(v)) for k, v in re.findall(r'(\w+) (\d+)', text.split(
        'responder: stopped (')[-1].split(')')[0])) if 'stopped (' in text else {}
    stored = [s.count_records() for s in stations]
    if any(codes) or any(count != records for count in stored):
        raise SystemExit('%d secondaries: exit codes %s, stored %s of %d (logs in %s)'
                         % (n, codes, stored, records, root))
    for station in stations:
        shutil.rmtree(station.root, ignore_errors=True)
    return dict(n=n, cpu=cpu, wall=wall, responder_rss=responder_rss / 1024,
                requester_rss=max(rss) / 1024, pages=counters.get('pages'),
                shared=counters.get('pages_shared'), cache=cache)


def report(row, floor):
    print('%2d secondaries%s: responder CPU %6.2f s (%.2fx the floor), wall %6.1f s, '
          'responder peak RSS %3.0f MB, largest requester peak RSS %3.0f MB, pages served '
          '%s (shared %s)' % (row['n'], '' if row['cache'] else ' (no cache)', row['cpu'],
                              row['cpu'] / floor, row['wall'], row['responder_rss'],
                              row['requester_rss'], row['pages'], row['shared']), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=c.YEAR)
    parser.add_argument('--secondaries', default='1,5,20',
                        help='comma-separated numbers of secondaries (the first is the floor)')
    parser.add_argument('--without-cache', action='store_true',
                        help='also run each count with a responder that shares nothing')
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    args = parser.parse_args()
    counts = [int(n) for n in args.secondaries.split(',')]
    print('machine:', c.machine())
    print('load average before: %.2f %.2f %.2f' % os.getloadavg())
    root = c.workdir('fanout')
    broker, primary, template = c.make_pair(root, args.records)
    rows = []
    try:
        floor = None
        for n in counts:
            for cache in (True, False) if args.without_cache else (True,):
                row = run(primary, template, root, n, args.records, cache)
                floor = floor or row['cpu']
                report(row, floor)
                rows.append(row)
    finally:
        c.tear_down(root, broker, (primary, template), args.keep)
    print('load average after: %.2f %.2f %.2f' % os.getloadavg())
    cached = [r for r in rows if r['cache']]
    first, last = cached[0], cached[-1]
    print('responder CPU for %d secondaries / for %d: %.2f (target <= 3)'
          % (last['n'], first['n'], last['cpu'] / first['cpu']))


if __name__ == '__main__':
    main()
