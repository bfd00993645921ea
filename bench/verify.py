"""Verification benchmark: what comparing and repairing costs on N records (default one
year of 5-minute records) that both stations hold.

    .venv/bin/python bench/verify.py [--records 105120]

Prints the time of `verify --days 7` (what the requester does by itself after every
catch-up and once a day), of `verify --all`, and of `verify --days 7 --repair` after a day
was deleted on the secondary, and the responder's peak memory.
"""

import argparse
import re
import sqlite3
import subprocess
import sys
import time

import _common as c
from tests.support.station import seed_history


def run_verify(secondary, *args):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, '-m', 'user.mqttreplicate', '--config',
                           str(secondary.config_path), '--connect-timeout', '10', 'verify']
                          + list(args), env=c.cli_env(), capture_output=True, text=True,
                          cwd=str(c.REPO / 'bin'))
    elapsed = time.monotonic() - t0
    if proc.returncode not in (0, 1):
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        raise SystemExit('verify %s failed (%d)' % (' '.join(args), proc.returncode))
    return elapsed, proc.returncode, proc.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=c.YEAR)
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    args = parser.parse_args()
    print('machine:', c.machine())
    root = c.workdir('verify')
    broker, primary, secondary = c.make_pair(root, args.records)
    responder = None
    try:
        with primary.open_manager() as manager:
            first = manager.firstGoodStamp()
        done = 0
        while done < args.records:                  # the same records on the secondary
            n = min(c.CHUNK, args.records - done)
            seed_history(secondary, first + done * 300, n)
            done += n
        responder = c.cli(primary, 'respond', stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        elapsed, code, _ = run_verify(secondary, '--days', '7')
        print('verify --days 7: %.2f s (exit %d: %s)'
              % (elapsed, code, 'in sync' if code == 0 else 'differs'), flush=True)
        elapsed, code, _ = run_verify(secondary, '--all')
        print('verify --all (%d records): %.2f s (exit %d)' % (args.records, elapsed, code),
              flush=True)

        with secondary.open_manager() as manager:
            newest = manager.lastGoodStamp()
        day = newest - 3 * 86400
        day -= day % 86400
        con = sqlite3.connect(str(secondary.db_path()))
        with con:
            deleted = con.execute('DELETE FROM archive WHERE dateTime >= ? AND dateTime < ?',
                                  (day, day + 86400)).rowcount
        con.close()
        elapsed, code, out = run_verify(secondary, '--days', '7', '--repair')
        repaired = re.findall(r'repaired .*\((\d+) records\)', out)
        print('verify --days 7 --repair, one day (%d records) deleted: %.2f s (exit %d, '
              'repaired %s)' % (deleted, elapsed, code, ', '.join(repaired)), flush=True)
        print('responder peak RSS %.0f MB' % (c.peak_rss_kib(responder.pid) / 1024))
    finally:
        if responder is not None:
            responder.terminate()
            responder.wait(10)
        c.tear_down(root, broker, (primary, secondary), args.keep)


if __name__ == '__main__':
    main()
