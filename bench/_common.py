"""Shared set-up of the benchmarks: a private Mosquitto, a primary and a secondary station.

Benchmarks print their figures; docs/performance.md records them with the machine.
They reuse the test support (tests/support), so they run from the repository root:

    .venv/bin/python bench/catchup.py --records 105120
"""

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'bin')]

from tests.support.broker import Broker                          # noqa: E402
from tests.support.station import make_station, seed_history     # noqa: E402

YEAR = 105120
CHUNK = 100000


def machine():
    """One line describing this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return '%s, %d cores, Python %s, %s' % (cpu, os.cpu_count(), platform.python_version(),
                                           platform.platform(terse=True))


def workdir(name):
    path = Path(tempfile.mkdtemp(prefix='mqttreplicate-bench-%s-' % name))
    return path


def add_stanza(station, broker, role, **extra):
    """Give a station the [Replicator] stanza for one role."""
    def edit(config):
        config['Replicator'] = {
            'driver': 'user.mqttreplicate', 'host': broker.host, 'port': str(broker.port)}
        section = {'weewx': {'wx_binding': {'type': 'main'}}}
        section.update({k: str(v) for k, v in extra.items()})
        if role == 'Responder':
            section['enable'] = 'true'
        else:   # what `weectl station reconfigure --driver=user.mqttreplicate` does
            config['Station']['station_type'] = 'Replicator'
            config['StdArchive']['record_generation'] = 'hardware'
            config['Engine']['Services']['process_services'] = ['weewx.engine.StdConvert']
        config['Replicator'][role] = section
    station.edit(edit)


def make_pair(root, records, start=None, **requester_options):
    """A started broker, a seeded primary and an empty secondary."""
    broker = Broker(root / 'broker', max_queued_messages=1000)
    primary = make_station(root, 'primary')
    secondary = make_station(root, 'secondary')
    add_stanza(primary, broker, 'Responder')
    add_stanza(secondary, broker, 'Requester', **requester_options)
    start = start or int(time.time()) - records * 300 - 3600
    start -= start % 300
    t0 = time.monotonic()
    done = 0
    while done < records:
        n = min(CHUNK, records - done)
        seed_history(primary, start + done * 300, n)
        done += n
    print('seeded %d records in %.0f s' % (records, time.monotonic() - t0), flush=True)
    return broker, primary, secondary


def secondaries(template, root, n, tag, name):
    """n copies of a secondary's template station, each with a client id of its own
    (bench-<name>-<tag>-<i>) and no verification of its own."""
    stations = []
    for i in range(n):
        station = template.copy(root, 'secondary-%s-%d' % (tag, i))

        def edit(config, i=i):
            config['Replicator']['Requester']['clientid'] = 'bench-%s-%s-%d' % (name, tag, i)
            config['Replicator']['Requester']['verify_days'] = '0'
        station.edit(edit)
        stations.append(station)
    return stations


def tear_down(root, broker, stations, keep=False):
    """Stop every process of the stations and the broker; remove the work directory."""
    for station in stations:
        station.kill_all()
    broker.stop()
    if not keep:
        shutil.rmtree(root, ignore_errors=True)


def cli_env():
    return dict(os.environ, PYTHONPATH=str(REPO / 'bin'), TZ='UTC')


def cli(station, *args, **popen):
    """Start the command line of the package for a station."""
    return subprocess.Popen([sys.executable, '-m', 'user.mqttreplicate', '--config',
                             str(station.config_path)] + list(args), env=cli_env(), **popen)


def cpu_seconds(pid):
    """User + system CPU seconds a running process has used (/proc/<pid>/stat)."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def peak_rss_kib(pid):
    """Peak resident set size of a running process (VmHWM), in KiB."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    return None
