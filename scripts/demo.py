"""MQTTReplicate demo: a primary WeeWX station replicates to a secondary over a private broker.

Run it with scripts/demo (which runs scripts/setup first).  Everything lives in run/demo/
(git-ignored) and every process it starts is stopped at the end, also on Ctrl-C.  Exit status:
0 when the secondary's database equals the primary's, 1 when it does not, 2 on other errors.

Self-contained on purpose (weewx, configobj and the standard library only): it is meant to
be read as a recipe for setting up a primary and a secondary by hand.
"""

import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import configobj

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / 'bin' / 'user' / 'mqttreplicate'
SKIN = REPO / 'skins' / 'Replication'
RUN = REPO / 'run' / 'demo'
PYTHON = sys.executable

HISTORY_WEEKS = 4
HISTORY = HISTORY_WEEKS * 7 * 288        # 8,064 five-minute records
HISTORY_ENDS = 8 * 86400                 # the seeded history ends 8 days ago
PACE = 0.1                               # the primary makes ~10 archive records a second
LIVE_RECORDS = 40                        # live records to watch on the secondary
INSTANCE = 'weewx'

# Written into the primary as bin/user/demo_pacer.py.  Why it exists: see step 4 below.
PACER = '''\
"""Demo only: paces the generator-mode simulator and holds it between two records."""
import logging, os, time
import weewx
from weewx.engine import StdService
log = logging.getLogger(__name__)


class DemoPacer(StdService):
    def __init__(self, engine, config_dict):
        super().__init__(engine, config_dict)
        opts = config_dict.get('DemoPacer', {})
        self.pace = float(opts.get('pace', 0.1))
        self.hold_file = opts.get('hold_file')
        self.limit = int(opts.get('limit', 0))
        self.bind(weewx.NEW_ARCHIVE_RECORD, self.new_archive_record)

    def new_archive_record(self, event):
        ts = event.record['dateTime']
        time.sleep(self.pace)
        if (self.hold_file and os.path.exists(self.hold_file)) or (self.limit and ts >= self.limit):
            log.info('demo pacer: holding after record %d', ts)
            while True:
                time.sleep(0.1)
'''

PROCESSES = []          # (name, Popen) of everything started, for cleanup
START = time.monotonic()


# --------------------------------------------------------------------------------------------
#  Output
# --------------------------------------------------------------------------------------------

def say(text=''):
    print(text, flush=True)


def step(text):
    say('\n[%5.1f s] %s' % (time.monotonic() - START, text))


def fmt_ts(ts):
    return time.strftime('%Y-%m-%d %H:%M', time.localtime(ts)) if ts else '-'


class Fail(Exception):
    """Something went wrong; the message says what (exit 2)."""


# --------------------------------------------------------------------------------------------
#  Processes
# --------------------------------------------------------------------------------------------

def start(name, args, cwd, log_path):
    out = open(log_path, 'ab')
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)   # weewxd must load the station's own bin/user
    proc = subprocess.Popen([str(a) for a in args], cwd=str(cwd), stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)   # weewxd signals its own process group
    out.close()
    PROCESSES.append((name, proc))
    return proc


def stop(name, proc, timeout=20):
    """SIGTERM, wait, then SIGKILL the process group. Returns the exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            say('  %s did not stop within %d s; killing it' % (name, timeout))
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        except ProcessLookupError:
            pass
    return proc.returncode


def cleanup():
    for name, proc in reversed(PROCESSES):
        if proc.poll() is None:
            say('  stopping %s (pid %d)' % (name, proc.pid))
            stop(name, proc, timeout=10)


def interrupted(signum, frame):
    raise KeyboardInterrupt


def wait_for(predicate, timeout, what, proc=None, name=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise Fail('%s exited (status %s) while waiting for %s' % (name, proc.returncode, what))
        if time.monotonic() > deadline:
            raise Fail('timed out after %d s waiting for %s' % (timeout, what))
        time.sleep(0.1)


class LogTail:
    """New lines of a log file since the last call."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.partial = ''

    def lines(self):
        try:
            with open(self.path, 'rb') as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        text = self.partial + data.decode('utf-8', 'replace')
        lines = text.split('\n')
        self.partial = lines.pop()
        return lines


# "2026-01-02 03:04:05 weewxd[123]: INFO user.mqttreplicate.driver: message"
LOG_LINE = re.compile(r'^\S+ (\S+) \S+ (\w+) (\S+): (.*)$')


def interesting(line):
    """The secondary's log lines worth showing, shortened; None for the others."""
    m = LOG_LINE.match(line)
    if not m:
        return None
    clock, level, logger, message = m.groups()
    if level == 'DEBUG' or 'role=' in message:
        return None
    if 'Added record' in message and 'daily summary' in message:
        return None
    if not (logger.startswith('user.mqttreplicate') or level in ('WARNING', 'ERROR', 'CRITICAL')
            or 'Added record' in message or 'backfill' in message or 'Processed' in message):
        return None
    return '%s %-7s %s' % (clock, level, message)


# --------------------------------------------------------------------------------------------
#  Broker
# --------------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_broker(directory):
    mosquitto = shutil.which('mosquitto') or '/usr/sbin/mosquitto'
    if not os.path.exists(mosquitto):
        raise Fail('mosquitto not found (scripts/setup installs it)')
    directory.mkdir(parents=True)
    port = free_port()
    conf = directory / 'mosquitto.conf'
    conf.write_text('listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n'
                    'log_dest file %s\nlog_type error\nlog_type warning\nlog_type notice\n'
                    'log_type information\n' % (port, directory / 'mosquitto.log'))
    proc = start('mosquitto', [mosquitto, '-c', conf], directory, directory / 'console.log')

    def listening():
        try:
            socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
            return True
        except OSError:
            return False
    wait_for(listening, 15, 'mosquitto to listen', proc, 'mosquitto')
    return port


# --------------------------------------------------------------------------------------------
#  Stations
# --------------------------------------------------------------------------------------------

def create_station(root):
    result = subprocess.run([PYTHON, '-m', 'weectl', 'station', 'create', str(root),
                             '--no-prompt'], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise Fail('weectl station create failed:\n%s%s' % (result.stdout, result.stderr))
    # Install the extension: the package goes to bin/user/ and the Replication skin to
    # skins/ (weectl extension install copies them there too; links keep the demo on the
    # code of this repository).
    (root / 'bin' / 'user' / 'mqttreplicate').symlink_to(PACKAGE, target_is_directory=True)
    (root / 'skins' / 'Replication').symlink_to(SKIN, target_is_directory=True)
    (root / 'log').mkdir()
    config = configobj.ConfigObj(str(root / 'weewx.conf'), encoding='utf-8', interpolation=False)
    config['debug'] = '0'
    config['Logging'] = {
        'root': {'level': 'INFO', 'handlers': ['file']},
        'handlers': {'file': {'level': 'DEBUG', 'formatter': 'verbose',
                              'class': 'logging.FileHandler',
                              'filename': 'log/{process_name}.log'}}}
    services = config['Engine']['Services']
    # No StdPrint, and of the reports only the Replication page (the extension's report,
    # as the installer adds it): the demo is about data.
    services['report_services'] = ['weewx.engine.StdReport']
    services['restful_services'] = []
    reports = config['StdReport']
    for name in reports.sections:
        reports[name]['enable'] = 'false'
    reports['Replication'] = {'skin': 'Replication', 'enable': 'true',
                              'HTML_ROOT': reports['HTML_ROOT'] + '/replication'}
    config['StdArchive']['archive_delay'] = '1'
    return config


def configure(port, now):
    primary = create_station(RUN / 'primary')
    primary['log_success'] = 'False'
    primary['Station']['station_type'] = 'Simulator'
    primary['Simulator']['mode'] = 'generator'             # no sleeping: fast-forward
    primary['Simulator']['loop_interval'] = '30'
    primary['Simulator']['start'] = time.strftime('%Y-%m-%dT%H:%M',
                                                  time.localtime(now - HISTORY_ENDS))
    primary['Simulator']['resume'] = 'True'                # continue after the history
    # WeeWX's stock loop_hilo = True: the primary's daily summaries hold the highs and lows
    # of its LOOP packets, and the secondary gets them copied as they are.
    primary['Engine']['Services']['restful_services'] = [
        'user.mqttreplicate.MQTTResponder', 'user.demo_pacer.DemoPacer']
    primary['DemoPacer'] = {'pace': str(PACE), 'hold_file': str(RUN / 'primary' / 'hold'),
                            'limit': str(now - 3600)}
    primary['Replicator'] = {
        'host': '127.0.0.1', 'port': str(port),
        'Responder': {'enable': 'true', INSTANCE: {'wx_binding': {'type': 'main'}}}}
    primary.write()
    (RUN / 'primary' / 'bin' / 'user' / 'demo_pacer.py').write_text(PACER)

    secondary = create_station(RUN / 'secondary')
    secondary['log_success'] = 'True'                      # "Added record ..." per live record
    secondary['Station']['station_type'] = 'Replicator'
    # Only StdConvert: StdCalibrate, StdQC and StdWXCalculate would alter replicated records.
    secondary['Engine']['Services']['process_services'] = ['weewx.engine.StdConvert']
    secondary['Replicator'] = {
        'driver': 'user.mqttreplicate', 'host': '127.0.0.1', 'port': str(port),
        'Requester': {INSTANCE: {'wx_binding': {'type': 'main'}}}}
    secondary.write()


def seed_primary(now):
    """HISTORY records from the weewx simulator, in bulk (as weectl database transfer does)."""
    sys.path.insert(0, str(RUN / 'primary' / 'bin'))
    import weecfg
    import weewx.manager
    from weewx.drivers.simulator import Simulator

    config = weecfg.read_config(str(RUN / 'primary' / 'weewx.conf'))[1]
    manager_dict = weewx.manager.get_manager_dict_from_config(config, 'wx_binding')
    last = now - HISTORY_ENDS
    first = last - (HISTORY - 1) * 300
    sim = Simulator(start_time=first - 300, loop_interval=300, mode='generator')
    packets = sim.genLoopPackets()
    records = []
    for _ in range(HISTORY):
        record = next(packets)
        record['interval'] = 5
        records.append(record)
    db_dict, table = manager_dict['database_dict'], manager_dict['table_name']
    with weewx.manager.DaySummaryManager.open_with_create(db_dict, table,
                                                         manager_dict['schema']):
        pass
    with weewx.manager.Manager.open(db_dict, table) as plain:
        plain.addRecord(records, log_success=False)
    with weewx.manager.DaySummaryManager.open(db_dict, table) as manager:
        manager.backfill_day_summary(progress_fn=None)
    return first, last


def db_path(station):
    return RUN / station / 'archive' / 'weewx.sdb'


def db_stats(station):
    """(count, newest dateTime) of a station's archive table; (0, None) if not there yet."""
    path = db_path(station)
    if not path.exists():
        return 0, None
    try:
        con = sqlite3.connect(str(path), timeout=5)
        try:
            return con.execute('SELECT COUNT(*), MAX(dateTime) FROM archive').fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0, None


# --------------------------------------------------------------------------------------------
#  Verification
# --------------------------------------------------------------------------------------------

def compare(rel_tol=1e-9):
    """Row-by-row comparison of the archive table and every daily-summary table.
    Returns (report lines, number of differences)."""
    a = sqlite3.connect(str(db_path('primary')))
    b = sqlite3.connect(str(db_path('secondary')))
    try:
        tables_a = {r[0] for r in a.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        tables_b = {r[0] for r in b.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        tables = sorted(t for t in tables_a | tables_b
                        if t == 'archive' or (t.startswith('archive_day_')
                                              and t != 'archive_day__metadata'))
        differences = []
        rows = {'archive': 0, 'day': 0}
        inexact = 0
        for table in tables:
            if table not in tables_a or table not in tables_b:
                differences.append('table %s exists on one side only' % table)
                continue
            cols_a = [r[1] for r in a.execute('PRAGMA table_info(%s)' % table)]
            cols_b = [r[1] for r in b.execute('PRAGMA table_info(%s)' % table)]
            if cols_a != cols_b:
                differences.append('%s: different columns' % table)
                continue
            sql = 'SELECT * FROM %s ORDER BY dateTime' % table
            data_a, data_b = a.execute(sql).fetchall(), b.execute(sql).fetchall()
            if len(data_a) != len(data_b):
                differences.append('%s: %d rows on the primary, %d on the secondary'
                                   % (table, len(data_a), len(data_b)))
            by_ts = {row[0]: row for row in data_b}
            for row in data_a:
                other = by_ts.get(row[0])
                if other is None:
                    differences.append('%s: row %s missing on the secondary' % (table, row[0]))
                    continue
                for col, x, y in zip(cols_a, row, other):
                    if x == y:
                        continue
                    if isinstance(x, float) and isinstance(y, (int, float)) \
                            and math.isclose(x, y, rel_tol=rel_tol):
                        inexact += 1
                        continue
                    differences.append('%s: row %s column %s: %r vs %r'
                                       % (table, row[0], col, x, y))
            rows['archive' if table == 'archive' else 'day'] += len(data_a)
        lines = ['archive rows compared:        %s (every column)' % format(rows['archive'], ','),
                 'daily-summary rows compared:  %s (in %d tables)'
                 % (format(rows['day'], ','), len(tables) - 1)]
        if inexact:
            lines.append('values equal only to within %g (float rounding): %d' % (rel_tol,
                                                                                    inexact))
        return lines, differences
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------------------------
#  The demo
# --------------------------------------------------------------------------------------------

def demo():
    os.environ.setdefault('TZ', 'UTC')      # daily summaries are local-time days
    time.tzset()
    now = int(time.time()) // 300 * 300
    say('MQTTReplicate demo: a primary WeeWX station replicates its database to a secondary')
    say('through an MQTT v5 broker.  Working directory: %s' % RUN)
    if RUN.exists():
        shutil.rmtree(RUN)
    RUN.mkdir(parents=True)

    step('1. Starting a private Mosquitto broker (loopback only)')
    port = start_broker(RUN / 'broker')
    say('  mosquitto listening on 127.0.0.1:%d' % port)

    step('2. Creating two throwaway stations with "weectl station create"')
    configure(port, now)
    say('  primary:   %s  (Simulator driver + user.mqttreplicate.MQTTResponder)'
        % (RUN / 'primary'))
    say('  secondary: %s  (driver user.mqttreplicate: station_type = Replicator)'
        % (RUN / 'secondary'))

    step('3. Seeding the primary with %d weeks of history (%s five-minute records)'
         % (HISTORY_WEEKS, format(HISTORY, ',')))
    t = time.monotonic()
    first, last = seed_primary(now)
    say('  %s .. %s stored in %.1f s' % (fmt_ts(first), fmt_ts(last), time.monotonic() - t))

    step('4. Starting weewxd on the primary')
    say('  The simulator runs in generator mode: it fast-forwards from the end of the history,')
    say('  and a small demo service paces it to ~%d archive records a second.' % round(1 / PACE))
    primary = start('primary weewxd', [PYTHON, '-m', 'weewxd', RUN / 'primary' / 'weewx.conf'],
                    RUN / 'primary', RUN / 'primary' / 'log' / 'console.log')
    primary_log = RUN / 'primary' / 'log' / 'weewxd.log'
    wait_for(lambda: 'responder: connected' in primary_log.read_text(errors='replace')
             if primary_log.exists() else False, 30, 'the responder to connect', primary,
             'primary weewxd')
    say('  primary is archiving and its responder is connected to the broker')
    time.sleep(2)
    count, newest = db_stats('primary')
    say('  primary: %s records, newest %s' % (format(count, ','), fmt_ts(newest)))

    step('5. Starting weewxd on the secondary (empty database): catch-up')
    secondary = start('secondary weewxd',
                      [PYTHON, '-m', 'weewxd', RUN / 'secondary' / 'weewx.conf'],
                      RUN / 'secondary', RUN / 'secondary' / 'log' / 'console.log')
    tail = LogTail(RUN / 'secondary' / 'log' / 'weewxd.log')
    t = time.monotonic()
    caught_up = None
    last_count = -1
    while caught_up is None:
        for line in tail.lines():
            shown = interesting(line)
            if shown and 'Added record' not in shown:
                say('  secondary | ' + shown)
            m = re.search(r'driver: \S+ caught up at (\d+) \((\d+) records\)', line)
            if m:
                caught_up = int(m.group(1)), int(m.group(2))
        if caught_up is None:
            count, _ = db_stats('secondary')
            if count != last_count and count:
                say('  secondary: %s records so far' % format(count, ','))
                last_count = count
            if secondary.poll() is not None:
                raise Fail('the secondary weewxd exited (status %s)' % secondary.returncode)
            if time.monotonic() - t > 120:
                raise Fail('the secondary did not catch up within 120 s')
            time.sleep(0.25)
    elapsed = time.monotonic() - t
    say('  caught up: %s records in %.1f s after start (newest %s)'
        % (format(caught_up[1], ','), elapsed, fmt_ts(caught_up[0])))

    step('6. Live records: the primary keeps archiving, the secondary follows')
    target = caught_up[0] + LIVE_RECORDS * 300
    shown_live = 0
    deadline = time.monotonic() + 60
    while True:
        for line in tail.lines():
            shown = interesting(line)
            if not shown:
                continue
            if 'Added record' in shown:
                shown_live += 1
                if shown_live <= 6 or shown_live % 10 == 0:
                    say('  secondary | ' + shown)
            else:
                say('  secondary | ' + shown)
        count, newest = db_stats('secondary')
        if newest and newest >= target:
            break
        if secondary.poll() is not None or primary.poll() is not None:
            raise Fail('a weewxd exited during the live phase')
        if time.monotonic() > deadline:
            raise Fail('live records did not arrive within 60 s')
        time.sleep(0.2)
    p_count, p_newest = db_stats('primary')
    say('  secondary: %s records, newest %s;  primary: %s records, newest %s'
        % (format(count, ','), fmt_ts(newest), format(p_count, ','), fmt_ts(p_newest)))

    step('7. Stopping: primary first, then the secondary once it has everything')
    (RUN / 'primary' / 'hold').touch()      # the pacer holds the engine after the next record
    wait_for(lambda: 'demo pacer: holding after record' in primary_log.read_text(errors='replace'),
             30, 'the primary to rest between two records', primary, 'primary weewxd')
    stop('primary weewxd', primary)
    p_count, p_newest = db_stats('primary')
    say('  primary stopped: %s records, newest %s' % (format(p_count, ','), fmt_ts(p_newest)))
    for line in primary_log.read_text(errors='replace').splitlines():
        if 'responder: stopped' in line:
            say('  primary   | ' + interesting(line))
    try:
        wait_for(lambda: db_stats('secondary') == (p_count, p_newest), 30,
                 "the secondary to store the primary's last records", secondary,
                 'secondary weewxd')
    except Fail as e:
        say('  ' + str(e))
    for line in tail.lines():
        shown = interesting(line)
        if shown and 'Added record' not in shown:
            say('  secondary | ' + shown)
    stop('secondary weewxd', secondary)
    say('  secondary stopped')
    for name, proc in PROCESSES:
        if name == 'mosquitto':
            stop(name, proc)
    say('  broker stopped')

    step('Verification (row by row, archive table and daily summaries)')
    s_count, s_newest = db_stats('secondary')
    say('  primary:    %s archive rows, %s .. %s' % (format(p_count, ','), fmt_ts(first),
                                                     fmt_ts(p_newest)))
    say('  secondary:  %s archive rows, newest %s' % (format(s_count, ','), fmt_ts(s_newest)))
    lines, differences = compare()
    for line in lines:
        say('  ' + line)
    for line in differences[:20]:
        say('  DIFFERENT: ' + line)
    if len(differences) > 20:
        say('  ... and %d more differences' % (len(differences) - 20))
    say('  databases equal: %s' % ('yes' if not differences else 'NO'))

    step('8. The replication pages (the Replication report of each station)')
    # The primary's weewxd wrote its page after its records; the secondary's writes it at the
    # end of its archive intervals (5 minutes), so here WeeWX's report engine makes it once.
    report_run('secondary')
    for station in ('primary', 'secondary'):
        page = RUN / station / 'public_html' / 'replication' / 'index.html'
        if page.is_file():
            say('  %-10s %s' % (station + ':', page))
        else:
            say('  %-10s no page written (see %s)' % (station + ':', RUN / station / 'log'))
    say('\nLogs and databases are in %s (total %.0f s).' % (RUN, time.monotonic() - START))
    return 0 if not differences else 1


def report_run(station):
    """weectl report run Replication: WeeWX's report engine, as the station runs it."""
    result = subprocess.run([PYTHON, '-m', 'weectl', 'report', 'run', 'Replication',
                             '--config=%s' % (RUN / station / 'weewx.conf')],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            cwd=str(RUN / station), timeout=120)
    if result.returncode != 0:
        say('  weectl report run failed on the %s:\n%s%s' % (station, result.stdout,
                                                          result.stderr))


def main():
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    status = 2
    try:
        status = demo()
    except KeyboardInterrupt:
        say('\ninterrupted; cleaning up')
        status = 130
    except Fail as e:
        say('\nFAILED: %s' % e)
        status = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup()
    return status


if __name__ == '__main__':
    sys.exit(main())
