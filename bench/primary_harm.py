"""Primary-harm benchmark: is a primary's weewxd on time while twenty secondaries catch up
a year from its responder at once?

    .venv/bin/python bench/primary_harm.py [--secondaries 20] [--records 105120]
                                           [--duration 300] [--archive-interval 60]
                                           [--loop-interval 2.5] [--keep]

The primary is a real weewxd: weewx's Simulator in real time (`loop_interval` 2.5 s,
`archive_interval` 60 s, `loop_hilo` on), the responder as the service it is in a station
(MQTTResponder), pinned to core 0 with taskset. Its history is a year of 5-minute records
ending an hour before the run. The secondaries are standalone `request --once` processes,
pinned with the broker to core 1.

Two runs of `--duration` seconds each, in the same weewxd one after the other: idle (no
secondaries: the floor), then under load (the secondaries start together; when all are
done and time is left, the same number start again on empty databases). For each run it
prints the gaps between LOOP packets (p50, p99, max) and how late they came after
their due time (the Simulator's own clock), the delay of each archive record's
storing (the wall time StdArchive had stored it, minus its dateTime) and the CPU share of
weewxd's threads (the responder's: its workers, status and protocol-1 threads and paho's
loop; the engine's: the main thread), as a share of one core.

The times come from a small service the bench puts in the primary's user directory
(harm_clock.py: it writes the wall time of each NEW_LOOP_PACKET and, right after
StdArchive, of each NEW_ARCHIVE_RECORD), and the Simulator is phased so that a LOOP
packet arrives 0.6 s after each archive boundary (harm_sim.py), as a console's would at
some phase: the delay then measures the engine, not where the console's packets fall.
Targets: p99 LOOP gap at most loop_interval + 0.5 s; every record stored within 2 s.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

import _common as c

from tests.support.station import STARTED

TICKS = os.sysconf('SC_CLK_TCK')
PHASE = 0.6          # a LOOP packet this many seconds after each archive boundary

CLOCK = '''"""The bench's clock: wall times of LOOP packets and stored archive records."""
import threading
import time

import weewx
from weewx.engine import StdService


class HarmClock(StdService):
    """Writes 'L wall dateTime' per LOOP packet, 'A wall dateTime' per archive record
    (after StdArchive stored it) and 'T native_id name' per thread, to harm_clock.txt."""

    def __init__(self, engine, config_dict):
        super().__init__(engine, config_dict)
        self.out = open(%r, 'a', buffering=1)
        self.bind(weewx.NEW_LOOP_PACKET, self.loop)
        self.bind(weewx.NEW_ARCHIVE_RECORD, self.archive)

    def loop(self, event):
        self.out.write('L %%.3f %%d\\n' %% (time.time(), event.packet['dateTime']))

    def archive(self, event):
        now = time.time()
        for thread in threading.enumerate():
            self.out.write('T %%s %%s\\n' %% (thread.native_id, thread.name))
        self.out.write('A %%.3f %%d\\n' %% (now, event.record['dateTime']))
'''

SIM = '''"""weewx's Simulator in real time, phased: a LOOP packet %(phase)s s after each multiple
of the loop interval."""
import time

from weewx.drivers.simulator import Simulator


def loader(config_dict, engine):
    station = Simulator(**config_dict['Simulator'])
    step = station.loop_interval
    station.the_time = (time.time() // step) * step + %(phase)s
    return station
'''


def make_primary(root, args):
    broker, primary, template = c.make_pair(root, args.records)
    user = primary.root / 'bin' / 'user'
    clock_path = root / 'harm_clock.txt'
    (user / 'harm_clock.py').write_text(CLOCK % str(clock_path))
    (user / 'harm_sim.py').write_text(SIM % {'phase': PHASE})

    def edit(config):
        config['Station']['station_type'] = 'Simulator'
        config['Simulator'] = {'driver': 'user.harm_sim', 'mode': 'simulator',
                               'loop_interval': str(args.loop_interval)}
        config['StdArchive']['archive_interval'] = str(args.archive_interval)
        config['StdArchive']['loop_hilo'] = 'True'
        config['StdArchive']['record_generation'] = 'software'
        services = config['Engine']['Services']
        archive = list(services['archive_services'])
        if isinstance(services['archive_services'], str):
            archive = [services['archive_services']]
        services['archive_services'] = archive + ['user.harm_clock.HarmClock']
        services['restful_services'] = ['user.mqttreplicate.MQTTResponder']
    primary.edit(edit)
    return broker, primary, template, clock_path



def pin(pid, core):
    subprocess.run(['taskset', '-a', '-p', '-c', str(core), str(pid)], check=True,
                   stdout=subprocess.DEVNULL)


def thread_cpu(pid):
    """{native thread id: user + system CPU seconds} of a process's threads."""
    result = {}
    for tid in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/stat' % (pid, tid)) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        result[int(tid)] = (int(fields[11]) + int(fields[12])) / TICKS
    return result


def read_clock(path):
    loops, archives, names = [], [], {}
    for line in path.read_text().splitlines():
        kind, a, b = line.split(' ', 2)
        if kind == 'L':
            loops.append(float(a))
        elif kind == 'A':
            archives.append((float(a), int(b)))
        elif kind == 'T':
            names[int(a)] = b
    return loops, archives, names


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float('nan')
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_load(template, root, args, until):
    """Waves of secondaries until `until` (monotonic); returns (waves, records stored)."""
    waves = stored = 0
    while time.monotonic() < until or waves == 0:
        stations = c.secondaries(template, root, args.secondaries, waves, 'harm')
        procs = []
        for i, station in enumerate(stations):
            out = open(root / ('requester-%d-%d.log' % (waves, i)), 'w')
            procs.append((subprocess.Popen(
                ['taskset', '-c', '1', sys.executable, '-m', 'user.mqttreplicate', '--config',
                 str(station.config_path), 'request', '--once'], env=c.cli_env(), stdout=out,
                stderr=subprocess.STDOUT, cwd=str(c.REPO / 'bin')), out))
        codes = [proc.wait() for proc, _ in procs]
        for _, out in procs:
            out.close()
        counts = [s.count_records() for s in stations]
        if any(codes) or min(counts) < args.records:
            raise SystemExit('wave %d: exit codes %s, stored %s (logs in %s)'
                             % (waves, codes, counts, root))
        stored += sum(counts)
        print('  wave %d: %d secondaries caught up %d records each (%.0f s left)'
              % (waves, len(stations), min(counts), until - time.monotonic()), flush=True)
        for station in stations:
            shutil.rmtree(station.root, ignore_errors=True)
        waves += 1
    return waves, stored


def window(label, pid, clock_path, work, args):
    """Run work() and measure weewxd meanwhile; returns the figures."""
    cpu0 = thread_cpu(pid)
    t0 = time.time()
    extra = work()
    t1 = time.time()
    cpu1 = thread_cpu(pid)
    loops, archives, names = read_clock(clock_path)
    loops = [t for t in loops if t0 <= t <= t1]
    gaps = [b - a for a, b in zip(loops, loops[1:])]
    step = args.loop_interval
    late = [(t - PHASE) % step for t in loops]          # after the packet's due time
    stored = [(wall, ts) for wall, ts in archives if t0 <= wall <= t1]
    delays = [wall - ts for wall, ts in stored]
    used = {tid: cpu1.get(tid, 0) - cpu0.get(tid, 0) for tid in cpu1}
    responder = sum(v for tid, v in used.items()
                    if names.get(tid, '').startswith(('responder', 'paho')))
    engine = sum(v for tid, v in used.items() if names.get(tid) == 'MainThread')
    total = sum(used.values())
    span = t1 - t0
    return dict(label=label, span=span, loops=len(loops), gaps=gaps, late=late, delays=delays,
                records=len(stored), responder=responder / span, engine=engine / span,
                total=total / span, extra=extra)


def report(row):
    gaps, delays = row['gaps'], row['delays']
    print('%-10s %5.0f s: LOOP packets %4d, gaps p50 %.2f s, p99 %.2f s, max %.2f s '
          '(late p99 %.3f s, max %.3f s); archive records %2d, stored after %.2f s median, '
          '%.2f s max; CPU share of one core: responder %.1f %%, engine %.1f %%, '
          'weewxd %.1f %%'
          % (row['label'], row['span'], row['loops'], percentile(gaps, 50),
             percentile(gaps, 99), max(gaps or [float('nan')]), percentile(row['late'], 99),
             max(row['late'] or [float('nan')]), row['records'],
             percentile(delays, 50), max(delays or [float('nan')]), 100 * row['responder'],
             100 * row['engine'], 100 * row['total']), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--secondaries', type=int, default=20)
    parser.add_argument('--records', type=int, default=c.YEAR)
    parser.add_argument('--duration', type=float, default=300,
                        help='seconds of each run, idle and under load (the load run lasts '
                        'at least one catch-up of all the secondaries)')
    parser.add_argument('--archive-interval', type=int, default=60)
    parser.add_argument('--loop-interval', type=float, default=2.5)
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    args = parser.parse_args()
    os.environ['TZ'] = 'UTC'
    time.tzset()
    print('machine:', c.machine())
    print('load average before: %.2f %.2f %.2f' % os.getloadavg(), flush=True)
    root = c.workdir('harm')
    broker, primary, template, clock_path = make_primary(root, args)
    pin(broker.proc.pid, 1)
    weewxd = primary.start_weewxd()
    rows = []
    try:
        weewxd.wait_for_log(STARTED, timeout=120)
        pin(weewxd.pid, 0)
        # the first archive record: the engine is settled
        deadline = time.monotonic() + 3 * args.archive_interval
        while time.monotonic() < deadline and '\nA ' not in '\n' + clock_path.read_text():
            time.sleep(0.5)
        print('primary weewxd %d on core 0; broker and secondaries on core 1; '
              'loop_interval %.1f s, archive_interval %d s'
              % (weewxd.pid, args.loop_interval, args.archive_interval), flush=True)
        rows.append(window('idle', weewxd.pid, clock_path,
                           lambda: time.sleep(args.duration), args))
        report(rows[-1])
        until = time.monotonic() + args.duration
        rows.append(window('%d catching up' % args.secondaries, weewxd.pid, clock_path,
                           lambda: run_load(template, root, args, until), args))
        waves, stored = rows[-1]['extra']
        report(rows[-1])
        print('  %d waves, %d records stored by the secondaries' % (waves, stored))
        if not weewxd.alive():
            raise SystemExit('the primary weewxd stopped: %s' % weewxd.describe())
    finally:
        weewxd.stop()
        c.tear_down(root, broker, (primary, template), args.keep)
    print('load average after: %.2f %.2f %.2f' % os.getloadavg())
    idle, load = rows
    target = args.loop_interval + 0.5
    p99 = percentile(load['gaps'], 99)
    worst = max(load['delays'] or [float('nan')])
    print('under load: p99 LOOP gap %.2f s (idle %.2f s; target <= %.1f s): %s; slowest '
          'archive record stored after %.2f s (idle %.2f s; target <= 2 s): %s'
          % (p99, percentile(idle['gaps'], 99), target, 'met' if p99 <= target else 'MISSED',
             worst, max(idle['delays'] or [float('nan')]), 'met' if worst <= 2 else 'MISSED'))


if __name__ == '__main__':
    main()
