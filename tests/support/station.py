"""Throwaway WeeWX 5 stations for end-to-end tests.

    station = make_station(tmp_path, 'primary')              # weectl station create + edits
    seed_history(station, start_ts, count=576)               # 2 days of 5-minute records, fast
    proc = station.start_weewxd()                            # -> StationProcess (Weewxd)
    proc.wait_for_log(STARTED)                               # 'Starting main packet loop'
    proc.stop()                                              # SIGTERM, then SIGKILL after 30 s
    assert compare_databases(primary, 'wx_binding', secondary, 'wx_binding') == []

Conventions
-----------
* A station lives in ``<root>/<name>`` and is made by ``python -m weectl station create
  <abs path> --no-prompt`` with the interpreter running the tests; weewx.conf is then edited:
  logging to ``log/{process_name}.log`` (weewxd -> ``log/weewxd.log``; root INFO,
  ``user.mqttreplicate`` DEBUG), ``debug = 0``, ``retry_wait = 2``, ``log_success = False``,
  report and restful services removed (empty lists), ``[StdArchive] archive_delay = 1``,
  ``[StdConvert] target_unit`` = the station's unit system, optional WAL journal.
* ``<station>/bin/user/mqttreplicate`` is a symlink to this repository's package
  (``bin/user/mqttreplicate``), so weewxd and the CLI load the code under test.
* Every process runs with ``TZ=UTC`` (daily summaries are local-time days; conftest sets the
  test process to UTC too) and **without PYTHONPATH**: weewxd *appends* the station's ``bin`` to
  sys.path, so a PYTHONPATH holding the repository's ``bin`` would shadow the station's
  ``user`` package (and its ``user.extensions``).
* Processes start in their own session (weewxd signals its whole process group on SIGTERM) with
  stdout/stderr in ``log/<name>.console``.  Every process is tracked and killed at teardown.
"""

import atexit
import contextlib
import datetime
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Union

import configobj

from tests.support.processes import kill_group


# Statuses after every record (status_heartbeat = 1), as before the heartbeat: test stations
# make records faster than their archive interval says (the simulator in generator mode,
# records written by the test), so a steady status held back for 10 intervals would show a
# picture many records old to tests that read statuses. tests/integration/test_status_quiet.py
# runs the heartbeat itself.
TEST_HEARTBEAT = '1'

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO_ROOT / 'bin' / 'user' / 'mqttreplicate'
PYTHON = sys.executable

# Log lines of weewxd 5.5.2 worth waiting for (regular expressions).
STARTED = r'Starting main packet loop'                 # engine running, services built
STARTING_UP = r'Starting up weewx version'             # after services were constructed
TERMINATING = r'Terminating weewx version'             # after SIGTERM, engine shut down
ENGINE_RESTART = r'INFO __main__: retrying\.\.\.'      # after an I/O or DB error (-> restart)
UNRECOVERABLE = r'Caught unrecoverable exception'      # weewxd is about to exit (status 1)

UNIT_NAMES = {'US': 'us', 'METRIC': 'metric', 'METRICWX': 'metricwx'}

_ALL_PROCESSES = weakref.WeakSet()


def process_env(extra: Optional[dict] = None) -> dict:
    """Environment for station subprocesses: TZ=UTC, no PYTHONPATH, unbuffered output."""
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    env['TZ'] = 'UTC'
    env['PYTHONUNBUFFERED'] = '1'
    if extra:
        for key, value in extra.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
    return env


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------

class StationProcess:
    """A process (weewxd or the extension's CLI) started for a station.

    ``log_path`` is the file that ``wait_for_log`` polls (weewxd: ``log/weewxd.log``);
    stdout+stderr go to ``output_path``.  Searches start at the size the log had when the
    process started, so earlier runs of the same station do not match.
    """

    def __init__(self, station: 'Station', args: Sequence[str], *, name: str,
                 log_path: Path, env: Optional[dict] = None, cwd: Optional[Path] = None):
        self.station = station
        self.args = [str(a) for a in args]
        self.name = name
        self.log_path = Path(log_path)
        self.output_path = station.root / 'log' / ('%s.console' % name)
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = _size(self.log_path)
        self.output_offset = _size(self.output_path)
        self._out = open(self.output_path, 'ab')
        self.started_at = time.time()
        self.proc = subprocess.Popen(self.args, cwd=str(cwd or station.root),
                                     env=process_env(env), stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid
        _ALL_PROCESSES.add(self)

    # -- state ---------------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll()

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the process to exit by itself; return its status."""
        rc = self.proc.wait(timeout)
        self._close()
        return rc

    # -- stopping ------------------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGTERM (weewxd shuts its engine down), wait up to timeout, then SIGKILL the group.

        Returns the exit status (weewxd: -15 after a clean SIGTERM).
        """
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._close()
        return self.proc.returncode

    def kill9(self) -> Optional[int]:
        """SIGKILL the process and its process group at once (a crash: no shutdown code runs)."""
        if self.proc.poll() is None:
            kill_group(self.proc)
            self.proc.wait(30)
        self._close()
        return self.proc.returncode

    kill = kill9

    def signal(self, signum: int) -> None:
        """Send a signal to the process (e.g. SIGSTOP / SIGCONT to freeze it)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def _close(self) -> None:
        if not self._out.closed:
            self._out.close()

    # -- output --------------------------------------------------------------------------------

    def log_text(self, since_start: bool = True) -> str:
        return _read(self.log_path, self.log_offset if since_start else 0)

    def output_text(self, since_start: bool = True) -> str:
        """What the process wrote to stdout/stderr."""
        return _read(self.output_path, self.output_offset if since_start else 0)

    def wait_for_log(self, pattern: str, timeout: float = 30.0, *, since_start: bool = True,
                     count: int = 1, flags: int = 0) -> 're.Match':
        """Poll the log until regex pattern matches (count times); return the last match.

        Raises AssertionError (with the log tail and console output) on timeout or when the
        process exits before the pattern shows up.
        """
        return self._wait(self.log_path, self.log_offset if since_start else 0, pattern,
                          timeout, count, flags, 'log %s' % self.log_path)

    def wait_for_output(self, pattern: str, timeout: float = 30.0, *, count: int = 1,
                        flags: int = 0) -> 're.Match':
        """Like wait_for_log, on the process's stdout/stderr."""
        return self._wait(self.output_path, self.output_offset, pattern, timeout, count, flags,
                          'output of %s' % self.name)

    def _wait(self, path, offset, pattern, timeout, count, flags, what):
        regex = re.compile(pattern, flags)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            matches = list(regex.finditer(_read(path, offset)))
            if len(matches) >= count:
                return matches[count - 1]
            if exited:
                raise AssertionError('%s exited (status %s) before %s matched %r\n%s'
                                     % (self.name, self.proc.returncode, what, pattern,
                                        self.describe()))
            if time.monotonic() > deadline:
                raise AssertionError('%s did not match %r within %.0f s\n%s'
                                     % (what, pattern, timeout, self.describe()))
            time.sleep(0.05)

    def describe(self, lines: int = 40) -> str:
        """The tails of the log and of the console output, for assertion messages."""
        log_tail = '\n'.join(self.log_text().splitlines()[-lines:])
        out_tail = '\n'.join(self.output_text().splitlines()[-lines:])
        return ('--- %s (tail) ---\n%s\n--- %s (tail) ---\n%s'
                % (self.log_path, log_tail, self.output_path, out_tail))

    def __repr__(self) -> str:
        state = 'running' if self.alive() else 'exited %s' % self.proc.returncode
        return '<%s %s pid %s %s>' % (self.name, self.station.name, self.pid, state)


Weewxd = StationProcess


# ------------------------------------------------------------------------------------------------
# Stations
# ------------------------------------------------------------------------------------------------

class Station:
    """A WeeWX station directory (WEEWX_ROOT) with its weewx.conf."""

    def __init__(self, root: Path, python: str = PYTHON):
        self.root = Path(root).resolve()
        self.name = self.root.name
        self.config_path = self.root / 'weewx.conf'
        self.log_path = self.root / 'log' / 'weewxd.log'
        self.python = python
        self.processes: List[StationProcess] = []

    # -- configuration -------------------------------------------------------------------------

    def load(self) -> configobj.ConfigObj:
        """weewx.conf as written (no WEEWX_ROOT added, no interpolation)."""
        return configobj.ConfigObj(str(self.config_path), encoding='utf-8', interpolation=False,
                                   file_error=True)

    def edit(self, fn: Callable[[configobj.ConfigObj], None]) -> 'Station':
        """Load weewx.conf, call fn(config) to change it in place, write it back."""
        config = self.load()
        fn(config)
        config.write()
        return self

    def config_dict(self) -> configobj.ConfigObj:
        """The configuration as weewx reads it (weecfg.read_config: WEEWX_ROOT filled in)."""
        import weecfg
        return weecfg.read_config(str(self.config_path))[1]

    def add_service(self, group: str, service: str) -> 'Station':
        """Append service to [Engine][[Services]] group (e.g. 'restful_services')."""
        def fn(config):
            services = config['Engine']['Services']
            current = [s for s in _as_list(services.get(group)) if s]
            if service not in current:
                current.append(service)
            services[group] = current
        return self.edit(fn)

    def remove_service(self, group: str, service: str) -> 'Station':
        def fn(config):
            services = config['Engine']['Services']
            services[group] = [s for s in _as_list(services.get(group)) if s and s != service]
        return self.edit(fn)

    def set_simulator(self, *, mode: str = 'generator', start: Optional[float] = None,
                      loop_interval: float = 60, resume: bool = True,
                      archive_interval: Optional[int] = None) -> 'Station':
        """Configure the Simulator driver, e.g. generator mode for a fast primary.

        start is a unix timestamp (written as local time, i.e. UTC in tests).
        """
        def fn(config):
            sim = config.setdefault('Simulator', {})
            sim['driver'] = 'weewx.drivers.simulator'
            sim['mode'] = mode
            sim['loop_interval'] = str(loop_interval)
            if start is not None:
                sim['start'] = time.strftime('%Y-%m-%dT%H:%M', time.localtime(start))
                sim['resume'] = str(bool(resume))
            config['Station']['station_type'] = 'Simulator'
            if archive_interval is not None:
                config['StdArchive']['archive_interval'] = str(archive_interval)
        return self.edit(fn)

    # -- databases -----------------------------------------------------------------------------

    def manager_dict(self, binding: str = 'wx_binding') -> dict:
        import weewx.manager
        return weewx.manager.get_manager_dict_from_config(self.config_dict(), binding)

    def db_path(self, binding: str = 'wx_binding') -> Path:
        """Path of the binding's SQLite database file."""
        return sqlite_path(self.manager_dict(binding))

    def open_manager(self, binding: str = 'wx_binding', initialize: bool = False):
        """weewx manager for binding (a context manager; close it, it holds a connection)."""
        import weewx.manager
        return weewx.manager.open_manager(self.manager_dict(binding), initialize=initialize)

    def count_records(self, binding: str = 'wx_binding') -> int:
        with open_reader(self.manager_dict(binding)) as reader:
            if reader is None:
                return 0
            table = self.manager_dict(binding)['table_name']
            try:
                return reader.scalar('SELECT COUNT(*) FROM %s' % table)
            except reader.errors:
                return 0

    def last_timestamp(self, binding: str = 'wx_binding') -> Optional[int]:
        with open_reader(self.manager_dict(binding)) as reader:
            if reader is None:
                return None
            table = self.manager_dict(binding)['table_name']
            try:
                return reader.scalar('SELECT MAX(dateTime) FROM %s' % table)
            except reader.errors:
                return None

    def timestamps(self, binding: str = 'wx_binding') -> set:
        """Every dateTime of the binding (empty if its database does not exist yet)."""
        with open_reader(self.manager_dict(binding)) as reader:
            if reader is None:
                return set()
            table = self.manager_dict(binding)['table_name']
            try:
                return {row[0] for row in reader.rows('SELECT dateTime FROM %s' % table)}
            except reader.errors:
                return set()

    # -- logs ----------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything weewxd logged for this station (all runs)."""
        return _read(self.log_path, 0)

    # -- processes -----------------------------------------------------------------------------

    def start_weewxd(self, *args: str, env: Optional[dict] = None) -> StationProcess:
        """Start ``python -m weewxd <weewx.conf> [args]`` (e.g. '-x' to exit on errors)."""
        proc = StationProcess(self, [self.python, '-m', 'weewxd', str(self.config_path)]
                              + list(args), name='weewxd', log_path=self.log_path, env=env)
        self.processes.append(proc)
        return proc

    def cli_args(self, *args: str) -> List[str]:
        return [self.python, '-m', 'user.mqttreplicate', '--config', str(self.config_path)] \
            + [str(a) for a in args]

    def start_cli(self, *args: str, env: Optional[dict] = None,
                  log_name: str = 'mqttreplicate') -> StationProcess:
        """Start ``python -m user.mqttreplicate --config <conf> args`` from the station's bin.

        wait_for_log() polls ``log/<log_name>.log``; wait_for_output() the console output.
        """
        proc = StationProcess(self, self.cli_args(*args), name='cli-%s' % (args[0] if args
                                                                          else 'mqttreplicate'),
                              log_path=self.root / 'log' / ('%s.log' % log_name), env=env,
                              cwd=self.root / 'bin')
        self.processes.append(proc)
        return proc

    def run_cli(self, *args: str, timeout: float = 120, env: Optional[dict] = None,
                input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run the CLI to completion; stdout and stderr captured as text."""
        return subprocess.run(self.cli_args(*args), cwd=str(self.root / 'bin'),
                              env=process_env(env), input=input, capture_output=True,
                              text=True, timeout=timeout, start_new_session=True)

    def weectl(self, *args: str, timeout: float = 120,
               env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """Run ``python -m weectl args --config=<conf>`` (config added unless given)."""
        args = [str(a) for a in args]
        if not any(a.startswith('--config') for a in args):
            args.append('--config=%s' % self.config_path)
        return subprocess.run([self.python, '-m', 'weectl'] + args, cwd=str(self.root),
                              env=process_env(env), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def kill_all(self) -> None:
        """SIGKILL every process started for this station that is still running."""
        for proc in self.processes:
            proc.kill9()

    def copy(self, dest_root: Path, name: Optional[str] = None) -> 'Station':
        """Copy the whole station directory (databases included; stop weewxd first)."""
        dest = Path(dest_root) / (name or self.name)
        shutil.copytree(self.root, dest, symlinks=True)
        return Station(dest, python=self.python)

    def __repr__(self) -> str:
        return '<Station %s>' % self.root


def make_station(root: Path, name: str, *, units: str = 'US', wal: bool = False,
                 archive_interval: Optional[int] = None, archive_delay: int = 1,
                 link_package: bool = True, python: str = PYTHON) -> Station:
    """Create ``<root>/<name>`` with ``weectl station create`` and edit it for tests.

    units: 'US', 'METRIC' or 'METRICWX' -- the database unit system ([StdConvert] target_unit)
    and the display units.  wal: journal_mode = WAL for the station's SQLite databases.
    """
    units = units.upper()
    if units not in UNIT_NAMES:
        raise ValueError('units must be one of %s' % ', '.join(UNIT_NAMES))
    station_dir = (Path(root) / name).resolve()
    station_dir.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([python, '-m', 'weectl', 'station', 'create', str(station_dir),
                           '--no-prompt', '--units=%s' % UNIT_NAMES[units]],
                          env=process_env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError('weectl station create failed (%s):\n%s%s'
                           % (proc.returncode, proc.stdout, proc.stderr))
    station = Station(station_dir, python=python)

    def configure(config):
        config['debug'] = '0'
        config['retry_wait'] = '2'
        config['log_success'] = 'False'
        config['Logging'] = {
            'root': {'level': 'INFO', 'handlers': ['file']},
            'loggers': {'user.mqttreplicate': {'level': 'DEBUG'}},
            'handlers': {'file': {'level': 'DEBUG', 'formatter': 'verbose',
                                  'class': 'logging.FileHandler',
                                  'filename': 'log/{process_name}.log'}},
        }
        services = config['Engine']['Services']
        services['report_services'] = []
        services['restful_services'] = []
        config['StdArchive']['archive_delay'] = str(archive_delay)
        if archive_interval is not None:
            config['StdArchive']['archive_interval'] = str(archive_interval)
        config.setdefault('StdConvert', {})['target_unit'] = units
        if wal:
            for db in config['Databases'].sections:
                if config['Databases'][db].get('database_type', 'SQLite') == 'SQLite':
                    config['Databases'][db]['pragmas'] = {'journal_mode': 'WAL'}

    station.edit(configure)
    (station.root / 'log').mkdir(exist_ok=True)
    if link_package:
        link = station.root / 'bin' / 'user' / 'mqttreplicate'
        if not link.is_symlink() and not link.exists():
            link.symlink_to(PACKAGE_DIR, target_is_directory=True)
    return station


class StationFactory:
    """stations(name, **make_station kwargs) -> Station; cleanup() kills every process."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.stations: List[Station] = []

    def __call__(self, name: str = 'station', **kwargs) -> Station:
        station = make_station(self.root, name, **kwargs)
        self.stations.append(station)
        return station

    def adopt(self, station: Station) -> Station:
        """Track a station made elsewhere (e.g. Station.copy()) for cleanup."""
        self.stations.append(station)
        return station

    def cleanup(self) -> None:
        for station in self.stations:
            station.kill_all()


@atexit.register
def _kill_all_processes() -> None:   # safety net behind the fixtures
    for proc in list(_ALL_PROCESSES):
        try:
            proc.kill9()
        except Exception:
            pass


# ------------------------------------------------------------------------------------------------
# Seeding
# ------------------------------------------------------------------------------------------------

# Time zero of the simulated observations: values depend on dateTime only, not on where a
# seeding run started.
SIM_ANCHOR = 946684800          # 2000-01-01 00:00:00 UTC


def simulated_record(ts: int, interval_minutes: int = 5, units: str = 'US') -> dict:
    """One archive record for dateTime ts from weewx's Simulator, a pure function of ts.

    The simulator's random observations (battery status, voltages, signal) are drawn from a
    random generator seeded with ts (the global random state is restored), and its stateful
    ones start fresh, so seeding the same timestamps twice -- in any order, in any chunks --
    gives identical rows.  Carries ``interval`` (minutes); converted to units.
    """
    import random

    import weewx
    import weewx.units
    from weewx.drivers.simulator import Simulator

    step = int(interval_minutes) * 60
    saved = random.getstate()
    try:
        random.seed(int(ts))
        # (the simulator's rain needs a loop interval of a few minutes at most)
        loop = min(step, 300)
        sim = Simulator(start_time=SIM_ANCHOR, resume_time=int(ts) - loop, loop_interval=loop,
                        mode='generator')
        record = next(sim.genLoopPackets())
    finally:
        random.setstate(saved)
    record['dateTime'] = int(ts)
    record['interval'] = int(interval_minutes)
    unit_system = weewx.units.unit_constants[units.upper()]
    if unit_system != weewx.US:
        record = weewx.units.to_std_system(record, unit_system)
    return record


def generate_records(start_ts: int, count: int, interval_minutes: int = 5,
                     units: str = 'US') -> Iterable[dict]:
    """count simulator records at start_ts, start_ts + interval, ... (see simulated_record)."""
    step = int(interval_minutes) * 60
    for i in range(count):
        yield simulated_record(int(start_ts) + i * step, interval_minutes, units)


def seed_history(station: Station, start_ts: int, count: int, interval_minutes: int = 5,
                 binding: str = 'wx_binding', *, units: Optional[str] = None,
                 records: Optional[Iterable[dict]] = None, loop_hilo: bool = True) -> tuple:
    """Bulk-load count records (or the given records) into the station's binding, fast.

    The archive rows go in through a plain ``weewx.manager.Manager`` (200 per transaction), then
    the binding's manager (DaySummaryManager) backfills the daily summaries -- what
    ``weectl database transfer`` does -- and, with loop_hilo, the days seeded get the highs
    and lows LOOP packets leave in a real station's summaries (loop_extremes), so that a
    secondary that rebuilds them from the archive instead of copying them differs.  Rows
    older than the database's newest row are allowed: the days they touch are rebuilt.
    units defaults to the station's [StdConvert] target_unit.  Returns (first dateTime,
    last dateTime) of what was given.
    """
    import weeutil.weeutil
    import weewx.manager

    config = station.config_dict()
    manager_dict = weewx.manager.get_manager_dict_from_config(config, binding)
    db_dict = manager_dict['database_dict']
    table = manager_dict['table_name']
    manager_cls = weeutil.weeutil.get_object(manager_dict['manager'])
    if units is None:
        units = config.get('StdConvert', {}).get('target_unit', 'US')
    if records is None:
        records = generate_records(start_ts, count, interval_minutes, units)
    records = list(records)
    if not records:
        return None, None
    first = min(r['dateTime'] for r in records)
    last = max(r['dateTime'] for r in records)

    # Create the database (archive + summary tables) with the binding's own manager class.
    with manager_cls.open_with_create(db_dict, table, manager_dict['schema']) as mgr:
        previous_last = mgr.lastGoodStamp()
    with weewx.manager.Manager.open(db_dict, table) as plain:
        plain.addRecord(records, log_success=False)
    if issubclass(manager_cls, weewx.manager.DaySummaryManager):
        with manager_cls.open(db_dict, table) as mgr:
            mgr.backfill_day_summary(progress_fn=None)
            if previous_last is not None and first <= previous_last:
                start_d = _archive_date(first)
                stop_d = _archive_date(min(last, previous_last))
                mgr.backfill_day_summary(start_d=start_d, stop_d=stop_d, progress_fn=None)
            if loop_hilo:
                loop_extremes(mgr, first, last)
    return first, last


def loop_extremes(manager, first: int, last: int) -> None:
    """What LOOP packets leave in the daily summaries of the days of first..last (dateTimes)
    under WeeWX's stock loop_hilo = True: an outTemp high above and a low below every
    archive record's, a wind gust and a barometer low no record has, at times between
    records. Deterministic (a function of each day's rows), so that two stations seeded
    alike are alike."""
    import weeutil.weeutil
    day_first = int(weeutil.weeutil.startOfArchiveDay(first))
    day_stop = int(weeutil.weeutil.archiveDaySpan(last).stop)
    table = manager.table_name
    keys = set(getattr(manager, 'daykeys', ()))
    with weedb_transaction(manager.connection) as cursor:
        where = ' WHERE dateTime >= ? AND dateTime < ? AND count > 0'
        if 'outTemp' in keys:
            cursor.execute('UPDATE %s_day_outTemp SET max = max + 1.3, maxtime = dateTime + '
                           '43237, min = min - 0.7, mintime = dateTime + 21611' % table + where,
                           (day_first, day_stop))
        if 'wind' in keys:
            cursor.execute('UPDATE %s_day_wind SET max = max + 4.5, maxtime = dateTime + 50017'
                           % table + where, (day_first, day_stop))
        if 'barometer' in keys:
            cursor.execute('UPDATE %s_day_barometer SET min = min - 0.013, mintime = dateTime + '
                           '3607' % table + where, (day_first, day_stop))


def loop_accumulator(record: dict):
    """The LOOP packets of a record's archive period as StdArchive accumulates them under
    loop_hilo = True (the accumulator it hands to addRecord with the record): an outTemp
    above and below the record's, a barometer below, a gust above, a minute or two before
    it. Deterministic, so that two primaries fed alike are alike."""
    import weeutil.weeutil
    import weewx.accum
    ts, step = record['dateTime'], int(record.get('interval', 5)) * 60
    accum = weewx.accum.Accum(weeutil.weeutil.TimeSpan(ts - step, ts), record['usUnits'])
    swing = (ts // step) % 7 / 7.0           # some periods bring a day's extreme, most not
    for at, changes in ((ts - step + step // 3, {'outTemp': 1.3 * swing, 'barometer': -0.013}),
                        (ts - step // 3, {'outTemp': -0.7 * swing, 'windGust': 4.5 * swing})):
        packet = {'dateTime': at, 'usUnits': record['usUnits']}
        for name, delta in changes.items():
            if record.get(name) is not None:
                packet[name] = record[name] + delta
        accum.addRecord(packet)
    return accum


def weedb_transaction(connection):
    import weedb
    return weedb.Transaction(connection)


def _archive_date(ts: int) -> datetime.date:
    import weeutil.weeutil
    return datetime.date.fromtimestamp(weeutil.weeutil.startOfArchiveDay(ts))


# ------------------------------------------------------------------------------------------------
# Comparing
# ------------------------------------------------------------------------------------------------

StationLike = Union[Station, str, Path, dict]


def _config_of(source: StationLike):
    if isinstance(source, Station):
        return source.config_dict(), source.name
    if isinstance(source, (str, Path)):
        import weecfg
        return weecfg.read_config(str(source))[1], str(source)
    return source, str(source.get('config_path', source.get('WEEWX_ROOT', 'config')))


def sqlite_path(manager_dict: dict) -> Path:
    db = manager_dict['database_dict']
    if 'SQLITE_ROOT' not in db and not str(db.get('driver', '')).endswith('sqlite'):
        raise NotImplementedError('only SQLite databases are supported here: %r' % db)
    return Path(db.get('SQLITE_ROOT', '')) / db['database_name']


def _ro_connect(path: Path):
    """A query-only SQLite connection, closed when the with-block ends.

    Not ``mode=ro``: a read-only open of a WAL database fails when its -shm file is missing.
    """
    if not Path(path).exists():
        raise FileNotFoundError(path)
    con = sqlite3.connect(str(path), timeout=30)
    con.execute('PRAGMA query_only = ON')
    return contextlib.closing(con)


def is_sqlite(manager_dict: dict) -> bool:
    db = manager_dict['database_dict']
    return 'SQLITE_ROOT' in db or str(db.get('driver', '')).endswith('sqlite')


class _SqliteReader:
    """Query-only access to a SQLite database (see _ro_connect)."""

    errors = (sqlite3.OperationalError,)

    def __init__(self, con, where):
        self.con = con
        self.where = where

    def tables(self) -> List[str]:
        return _tables(self.con)

    def columns(self, table) -> List[str]:
        return _columns(self.con, table)

    def scalar(self, sql):
        return self.con.execute(sql).fetchone()[0]

    def rows(self, sql):
        return iter(self.con.execute(sql))


class _WeedbReader:
    """The same through weedb (MySQL / MariaDB): the values as weedb returns them (integers
    as int, REAL columns as float), compared like SQLite's."""

    def __init__(self, connection, where):
        import weedb
        self.connection = connection
        self.where = where
        self.errors = (weedb.DatabaseError,)

    def tables(self) -> List[str]:
        return sorted(self.connection.tables())

    def columns(self, table) -> List[str]:
        return list(self.connection.columnsOf(table))

    def scalar(self, sql):
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql)
            return cursor.fetchone()[0]
        finally:
            cursor.close()

    def rows(self, sql):
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql)
            yield from iter(cursor.fetchone, None)
        finally:
            cursor.close()


@contextlib.contextmanager
def open_reader(manager_dict: dict):
    """A reader of a binding's database, SQLite or MySQL (tables(), columns(table),
    scalar(sql), rows(sql), errors), or None if the database does not exist."""
    if is_sqlite(manager_dict):
        path = sqlite_path(manager_dict)
        if not path.exists():
            yield None
            return
        with _ro_connect(path) as con:
            yield _SqliteReader(con, path)
        return
    import weedb
    db = manager_dict['database_dict']
    try:
        connection = weedb.connect(db)
    except (weedb.NoDatabaseError, weedb.CannotConnectError):
        yield None
        return
    try:
        yield _WeedbReader(connection, '%s:%s/%s' % (db.get('host'), db.get('port', 3306),
                                                      db['database_name']))
    finally:
        connection.close()


def _columns(con, table) -> List[str]:
    return [row[1] for row in con.execute('PRAGMA table_info(%s)' % table)]


def _tables(con) -> List[str]:
    return [row[0] for row in
            con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]


def _same(a, b, rel_tol, abs_tol) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
    return a == b


def compare_databases(config_a: StationLike, binding_a: str, config_b: StationLike,
                      binding_b: str, *, rel_tol: float = 1e-9, abs_tol: float = 1e-9,
                      ignore_columns: Sequence[str] = (), max_diffs: int = 50) -> List[str]:
    """Differences between two bindings' databases as readable lines ([] = equal).

    config_a / config_b: a Station, a path to weewx.conf, or a config dict with WEEWX_ROOT.
    Either database may be SQLite or MySQL/MariaDB (read through weedb); values are compared
    as numbers (integers and floats alike) or None, so engines can be compared.
    Compares the archive table (same set of dateTimes; each common column, numbers equal
    within rel_tol relative / abs_tol absolute) and every daily-summary table
    ``<table>_day_<type>`` row by row (``<table>_day__metadata`` excluded).  Rows are streamed
    in dateTime order, so memory stays small for big databases.  At most max_diffs lines are
    itemised; a final line counts the rest.
    """
    import weewx.manager

    conf_a, label_a = _config_of(config_a)
    conf_b, label_b = _config_of(config_b)
    md_a = weewx.manager.get_manager_dict_from_config(conf_a, binding_a)
    md_b = weewx.manager.get_manager_dict_from_config(conf_b, binding_b)
    label_a = 'A(%s:%s)' % (label_a, binding_a)
    label_b = 'B(%s:%s)' % (label_b, binding_b)
    diffs: List[str] = []
    extra = [0]

    def note(line: str) -> None:
        if len(diffs) < max_diffs:
            diffs.append(line)
        else:
            extra[0] += 1

    table_a, table_b = md_a['table_name'], md_b['table_name']
    ignore = set(ignore_columns)
    with open_reader(md_a) as con_a, open_reader(md_b) as con_b:
        for con, md, label in ((con_a, md_a, label_a), (con_b, md_b, label_b)):
            if con is None:
                return ['%s: database %s does not exist'
                        % (label, md['database_dict'].get('database_name'))]
        tables_a, tables_b = set(con_a.tables()), set(con_b.tables())
        for table, tables, con, label in ((table_a, tables_a, con_a, label_a),
                                          (table_b, tables_b, con_b, label_b)):
            if table not in tables:
                return ['%s: no table %s in %s' % (label, table, con.where)]
        _compare_table(con_a, table_a, con_b, table_b, 'archive', label_a, label_b, ignore,
                       rel_tol, abs_tol, note)

        prefix_a, prefix_b = table_a + '_day_', table_b + '_day_'
        day_a = {t[len(prefix_a):] for t in tables_a
                 if t.startswith(prefix_a) and t != prefix_a + '_metadata'}
        day_b = {t[len(prefix_b):] for t in tables_b
                 if t.startswith(prefix_b) and t != prefix_b + '_metadata'}
        if day_a - day_b:
            note('daily summaries only in %s: %s' % (label_a, ', '.join(sorted(day_a - day_b))))
        if day_b - day_a:
            note('daily summaries only in %s: %s' % (label_b, ', '.join(sorted(day_b - day_a))))
        for obs in sorted(day_a & day_b):
            if obs in ignore:
                continue
            _compare_table(con_a, prefix_a + obs, con_b, prefix_b + obs,
                           'day_%s' % obs, label_a, label_b, set(), rel_tol, abs_tol, note)
    if extra[0]:
        diffs.append('... and %d more differences' % extra[0])
    return diffs


def _compare_table(con_a, table_a, con_b, table_b, what, label_a, label_b, ignore, rel_tol,
                   abs_tol, note) -> None:
    cols_a, cols_b = con_a.columns(table_a), con_b.columns(table_b)
    only_a = [c for c in cols_a if c not in cols_b and c not in ignore]
    only_b = [c for c in cols_b if c not in cols_a and c not in ignore]
    if only_a:
        note('%s: columns only in %s: %s' % (what, label_a, ', '.join(only_a)))
    if only_b:
        note('%s: columns only in %s: %s' % (what, label_b, ', '.join(only_b)))
    cols = [c for c in cols_a if c in cols_b and c not in ignore and c != 'dateTime']
    select = 'SELECT %s FROM %%s ORDER BY dateTime' % ', '.join(['dateTime'] + cols)

    n_a = con_a.scalar('SELECT COUNT(*) FROM %s' % table_a)
    n_b = con_b.scalar('SELECT COUNT(*) FROM %s' % table_b)
    if n_a != n_b:
        note('%s: %d rows in %s, %d rows in %s' % (what, n_a, label_a, n_b, label_b))

    rows_a = con_a.rows(select % table_a)
    rows_b = con_b.rows(select % table_b)
    row_a, row_b = next(rows_a, None), next(rows_b, None)
    while row_a is not None or row_b is not None:
        if row_b is None or (row_a is not None and row_a[0] < row_b[0]):
            note('%s: dateTime %s (%s) only in %s' % (what, row_a[0], _fmt_ts(row_a[0]),
                                                      label_a))
            row_a = next(rows_a, None)
        elif row_a is None or row_b[0] < row_a[0]:
            note('%s: dateTime %s (%s) only in %s' % (what, row_b[0], _fmt_ts(row_b[0]),
                                                      label_b))
            row_b = next(rows_b, None)
        else:
            for i, col in enumerate(cols, start=1):
                if not _same(row_a[i], row_b[i], rel_tol, abs_tol):
                    note('%s: dateTime %s (%s) %s: %r in %s, %r in %s'
                         % (what, row_a[0], _fmt_ts(row_a[0]), col, row_a[i], label_a,
                            row_b[i], label_b))
            row_a, row_b = next(rows_a, None), next(rows_b, None)


def _fmt_ts(ts) -> str:
    try:
        return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))
    except (TypeError, ValueError, OverflowError):
        return '?'


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------

def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        return 0


def _read(path: Path, offset: int = 0) -> str:
    try:
        with open(path, 'rb') as f:
            f.seek(offset)
            return f.read().decode('utf-8', 'replace')
    except FileNotFoundError:
        return ''
