"""The nemesis's faults: each one injected, held, and undone, on a Cluster.

    note = inject(cluster, fault, rng)    # returns what was done, for the report

A fault runs to its end before the next one starts; its hold is how long it lasts. A fault
whose target is not running (a secondary that has not joined, a process a previous fault
left stopped) is skipped with a note.
"""

import math
import os
import signal
import subprocess
import sys
import time

from tests.nemesis import edits
from tests.nemesis.cluster import CATCHING_UP
from tests.nemesis.schedule import PRIMARY

TRICKLE = 1500               # bytes a second, each way
LOCKER = r'''
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
con.execute('BEGIN EXCLUSIVE')
print('locked', flush=True)
time.sleep(float(sys.argv[2]))
con.execute('ROLLBACK')
'''


def inject(cluster, fault, rng):
    action = ACTIONS[fault.kind]
    return action(cluster, fault, rng) or ''


def _join(cluster, fault, rng):
    cluster.start_station(fault.target)
    return 'started'


def _kill9(cluster, fault, rng):
    if not cluster.running(fault.target):
        return 'skipped: not running'
    cluster.procs[fault.target].kill9()
    time.sleep(fault.hold)
    cluster.start_station(fault.target)
    return 'killed, started again'


def _sigterm_catchup(cluster, fault, rng):
    """Stopped for the hold (records pile up), started again over a trickle, and stopped
    with SIGTERM once its catch-up began, then started again at full speed."""
    name = fault.target
    if not cluster.running(name):
        return 'skipped: not running'
    cluster.procs[name].stop()
    time.sleep(fault.hold)
    link = cluster.links[name]
    link.throttle(TRICKLE)
    proc = cluster.start_station(name)
    try:
        proc.wait_for_log(CATCHING_UP, timeout=30)
        time.sleep(rng.uniform(0.2, 2.0))
        caught_up = bool(proc.log_text().count('caught up at'))
        proc.stop()
        note = 'SIGTERM %s its catch-up' % ('after' if caught_up else 'in')
    except AssertionError as e:
        proc.stop()
        note = 'SIGTERM without a catch-up seen (%s)' % str(e).splitlines()[0][:80]
    link.throttle(None)
    cluster.start_station(name)
    return note


def _sigstop(cluster, fault, rng):
    pid = cluster.pid_of(fault.target)
    if pid is None:
        return 'skipped: not running'
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(fault.hold)
    finally:
        os.kill(pid, signal.SIGCONT)
    return 'pid %d stopped and continued' % pid


def _broker_restart(cluster, fault, rng):
    broker = cluster.server(fault.target)
    if fault.variant == 'crash':
        broker.kill()                         # persistence up to its last autosave
    else:
        broker.stop()                         # persistence saved
        if fault.variant == 'forgetful':
            for path in broker.persistence_dir.glob('*'):
                path.unlink()                 # as a broker without persistence starts
    time.sleep(fault.hold)
    broker.start()
    return 'started again'


def _partition(cluster, fault, rng):
    link = cluster.links[fault.target]
    link.refuse(True)
    cut = link.cut()
    time.sleep(fault.hold)
    link.refuse(False)
    return '%d connections cut' % cut


def _trickle(cluster, fault, rng):
    link = cluster.links[fault.target]
    link.throttle(TRICKLE)
    time.sleep(fault.hold)
    link.throttle(None)
    return '%d bytes/s' % TRICKLE


def _freeze(cluster, fault, rng):
    link = cluster.links[fault.target]
    link.pause()
    time.sleep(fault.hold)
    link.resume()
    return 'frozen'


def _disk_full(cluster, fault, rng):
    directory = cluster.tmpfs
    if directory is None:
        return 'skipped: no tmpfs (mounting one needs root)'
    ballast = directory / 'ballast'
    cluster.ballast.append(ballast)
    free = _fill(ballast)
    time.sleep(fault.hold)
    cluster.release_disk()
    return '%d bytes of ballast' % free


def _fill(path):
    """Fill the file system of path with one file; the bytes written."""
    stat = os.statvfs(path.parent)
    free = stat.f_bavail * stat.f_frsize
    written = 0
    with open(path, 'wb') as f:
        try:
            os.posix_fallocate(f.fileno(), 0, free)
            written = free
        except OSError:
            chunk = b'\0' * (1 << 20)
            try:
                while True:
                    written += f.write(chunk)
                    f.flush()
            except OSError:
                pass
    return written


def _db_locked(cluster, fault, rng):
    station = cluster.station[fault.target]
    if fault.target not in cluster.procs:
        return 'skipped: not started'
    path = station.db_path()
    proc = subprocess.Popen([sys.executable, '-c', LOCKER, str(path), str(fault.hold)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    cluster.lockers.append(proc)
    line = proc.stdout.readline().strip()
    proc.wait(fault.hold + 40)
    cluster.release_locks()
    return 'held for %.1f s' % fault.hold if line == 'locked' else 'no lock: %s' % line


def _between_records(cluster, edit, *args):
    """Edit the primary's database while its engine waits between two records (held by
    the gate). Any writer of a SQLite database weewxd writes makes weewxd log 'database is
    locked' when their transactions meet; a real primary is idle between archive periods
    almost all the time, this one, compressed in time, almost never."""
    if not cluster.running(PRIMARY):
        return 'skipped: the primary is not running'
    held = cluster.hold_primary()
    try:
        return edit(cluster.station[PRIMARY], *args) + ' (primary held at %d)' % held
    finally:
        cluster.release()


def _import(cluster, fault, rng):
    return _between_records(cluster, edits.import_past, rng, cluster.interval)


def _correct(cluster, fault, rng):
    return _between_records(cluster, edits.correct, rng)


def _inf(cluster, fault, rng):
    return _between_records(cluster, edits.correct, rng, math.inf)


ACTIONS = {
    'join': _join,
    'kill9': _kill9,
    'sigterm-catchup': _sigterm_catchup,
    'sigstop': _sigstop,
    'broker-restart': _broker_restart,
    'partition': _partition,
    'trickle': _trickle,
    'freeze': _freeze,
    'disk-full': _disk_full,
    'db-locked': _db_locked,
    'import': _import,
    'correct': _correct,
    'inf': _inf,
}
