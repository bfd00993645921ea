"""The stations, brokers and links the nemesis runs, built from the suite's test support.

    cluster = Cluster(root, interval=300, minutes=3)
    cluster.build()                  # brokers, MariaDB, stations, proxies, seeded history
    cluster.start()                  # the primary and the first three secondaries
    cluster.start_station('joiner')  # the secondary that joins in the middle
    cluster.heal()                   # every fault undone, every station running
    cluster.hold_primary()           # the primary held between two records
    cluster.close()                  # everything stopped by its PID, the tmpfs unmounted

What runs (every port a free one of 127.0.0.1):

* the station's broker (persistence on) carrying the bridge of docs/topologies.md to the
  internet broker (TLS, passwords), through a TcpProxy: tests/support/bridge.py;
* a private MariaDB server (tests/support/mariadb.py);
* ``primary``: weewxd, the Simulator in generator mode from a seeded history, loop_hilo on
  (WeeWX's default), paced by the e2e gate (tests/e2e/station_services.py) to about one
  archive record a second, never past now - 1 h; the responder service;
* ``sqlite``: a weewxd secondary whose SQLite database lives on a small tmpfs;
* ``mariadb``: a weewxd secondary whose main binding is on the MariaDB server;
* ``bridged``: a weewxd secondary on the internet broker, reaching the primary over the bridge;
* ``joiner``: a weewxd secondary (SQLite) that starts in the middle of the run.

Every station reaches its broker through a TcpProxy of its own (the link the network faults
act on); so does the bridge.
"""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.e2e.replication import GATE, HOLDING, RESPONDER, install_services
from tests.support.bridge import BridgedBrokers, SECONDARY_PASSWORD, SECONDARY_USER
from tests.support.broker import Broker
from tests.support.mariadb import MariaDB
from tests.support.proxy import TcpProxy
from tests.support.station import TEST_HEARTBEAT, StationFactory, seed_history

from tests.nemesis.schedule import (BRIDGE, BROKER, INTERNET, JOINER, MARIADBD, PRIMARY,
                                    SECONDARIES, TMPFS_SECONDARY)

INSTANCE = 'weewx'
DAY = 86400
PACE = 1.0                   # wall-clock seconds the gate holds each archive record
SAFETY_MARGIN = 3600         # the primary never runs past now - this
LOOP_INTERVALS = {60: 10, 300: 30, 1800: 120}
TMPFS_SIZE = '96m'
HISTORY_RECORDS = {60: 2 * 1440, 300: 4 * 288, 1800: 10 * 48}    # seeded before the start
CATCHING_UP = r'driver: catching up \S+ since'


class Cluster:
    """See the module's docstring. log(text) prints a line of the run's report."""

    def __init__(self, root, interval, minutes, log=print):
        self.root = Path(root)
        self.interval = int(interval)
        self.minutes = float(minutes)
        self.log = log
        self.stations = StationFactory(self.root / 'stations')
        self.station = {}            # name -> Station
        self.procs = {}              # name -> StationProcess of its weewxd (or None)
        self.links = {}              # name -> TcpProxy
        self.brokers = []
        self.bridged = None
        self.mariadb = None
        self.tmpfs = None
        self.lockers = []            # processes holding a database locked
        self.ballast = []            # files filling a disk

    # --- building ------------------------------------------------------------------------------

    def build(self):
        def make_broker(**kwargs):
            broker = Broker(self.root / ('broker%d' % len(self.brokers)), **kwargs)
            self.brokers.append(broker)
            return broker
        self.bridged = BridgedBrokers(make_broker)
        self.links[BRIDGE] = self.bridged.proxy
        self.mariadb = MariaDB(self.root / 'mariadb')
        self._build_primary()
        for name in SECONDARIES + (JOINER,):
            self._build_secondary(name)

    @property
    def broker(self):
        return self.bridged.station

    @property
    def internet(self):
        return self.bridged.internet

    def server(self, name):
        """The broker or MariaDB server named by a fault's target."""
        return {BROKER: self.broker, INTERNET: self.internet, MARIADBD: self.mariadb}[name]

    def _link(self, name, broker, port):
        proxy = TcpProxy(broker.host, port)
        self.links[name] = proxy
        return {'host': proxy.host, 'port': str(proxy.port), 'max_delay': '2',
                'keepalive': '10', 'status_heartbeat': TEST_HEARTBEAT}

    def _build_primary(self):
        st = self.station[PRIMARY] = self.stations(PRIMARY, archive_interval=self.interval)
        # the run makes about one record a second: start far enough back in time
        expected = int(self.minutes * 60 / PACE * 1.5) + 600
        history_end = int(time.time()) - SAFETY_MARGIN - expected * self.interval
        history_end -= history_end % self.interval
        count = HISTORY_RECORDS[self.interval]
        first = history_end - (count - 1) * self.interval
        seed_history(st, first, count, interval_minutes=self.interval // 60)
        self.gate_file = st.root / 'gate'
        self.limit = int(time.time()) - SAFETY_MARGIN
        self.release()
        install_services(st)
        st.set_simulator(mode='generator', start=history_end,
                         loop_interval=LOOP_INTERVALS[self.interval],
                         archive_interval=self.interval)
        st.add_service('restful_services', RESPONDER)
        st.add_service('restful_services', GATE)
        connection = self._link(PRIMARY, self.broker, self.broker.port)

        def fn(config):
            config['E2E'] = {'gate_file': str(self.gate_file), 'pace': str(PACE)}
            config['StdArchive']['loop_hilo'] = 'True'
            config['Replicator'] = dict(connection, Responder={
                'enable': 'true', INSTANCE: {'wx_binding': {'type': 'main'}}})
        st.edit(fn)

    def _build_secondary(self, name):
        st = self.station[name] = self.stations(name, archive_interval=self.interval)
        (st.root / 'archive').mkdir(exist_ok=True)
        if name == TMPFS_SECONDARY and os.geteuid() == 0:     # else no disk-full faults
            self.tmpfs = st.root / 'archive'
            subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s' % TMPFS_SIZE, 'tmpfs',
                            str(self.tmpfs)], check=True)
        extra = {}
        if name == 'bridged':
            connection = self._link(name, self.internet, self.internet.tls_port)
            extra = {'username': SECONDARY_USER, 'password': SECONDARY_PASSWORD,
                     'tls': {'enable': 'true', 'ca_certs': self.internet.ca_certs}}
        else:
            connection = self._link(name, self.broker, self.broker.port)
        if name == 'mariadb':
            self.mariadb.configure(st)

        def fn(config):
            config['Station']['station_type'] = 'Replicator'
            config['Engine']['Services']['process_services'] = ['weewx.engine.StdConvert']
            config['StdArchive']['loop_hilo'] = 'True'
            config['Replicator'] = dict(connection, driver='user.mqttreplicate', **extra)
            config['Replicator']['Requester'] = {
                'archive_interval': str(self.interval), 'page_size': '500',
                INSTANCE: {'wx_binding': {'type': 'main'}}}
        st.edit(fn)

    # --- the primary's gate --------------------------------------------------------------------

    def _write_gate(self, value):
        tmp = self.gate_file.with_suffix('.tmp')
        tmp.write_text('%d\n' % value)
        tmp.replace(self.gate_file)

    def release(self):
        self._write_gate(self.limit)

    def hold_primary(self, timeout=60):
        """Hold the primary's engine after its next record; return that record's dateTime."""
        proc = self.procs[PRIMARY]
        before = len(re.findall(HOLDING, proc.log_text()))
        self._write_gate(0)
        held = proc.wait_for_log(HOLDING, timeout=timeout, count=before + 1)
        return int(held.group(1))

    # --- processes -----------------------------------------------------------------------------

    def start_station(self, name):
        self.procs[name] = self.station[name].start_weewxd()
        return self.procs[name]

    def running(self, name):
        proc = self.procs.get(name)
        return proc is not None and proc.alive()

    def secondaries(self):
        """The secondaries started so far."""
        return [name for name in SECONDARIES + (JOINER,) if name in self.procs]

    def start(self, timeout=180):
        """The primary, then the first secondaries; wait for their start-up catch-ups."""
        self.start_station(PRIMARY).wait_for_log(r'Starting main packet loop', timeout=60)
        for name in SECONDARIES:
            self.start_station(name)
        for name in SECONDARIES:
            self.procs[name].wait_for_log(r'driver: \S+ caught up at', timeout=timeout)

    def pid_of(self, name):
        """The PID a SIGSTOP of target name goes to."""
        if name in self.station:
            return self.procs[name].pid if self.running(name) else None
        server = self.server(name)
        return server.pid if server.running else None

    # --- healing -------------------------------------------------------------------------------

    def hung_brokers(self):
        """The brokers that run but do not answer an MQTT CONNECT within 5 s."""
        return [name for name in (BROKER, INTERNET)
                if self.server(name).running and not answers(self.server(name))]

    def revive(self, name):
        """kill -9 a hung broker and start it again (its persistence up to its last
        autosave)."""
        broker = self.server(name)
        self.log('  the %s (pid %s): %s' % (name, broker.pid, process_state(broker.pid)))
        broker.kill()
        broker.start()

    def release_disk(self):
        for path in self.ballast:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.ballast = []

    def release_locks(self):
        for proc in self.lockers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.lockers = []

    def heal(self):
        """Undo every fault: links open and at full speed, processes running and awake,
        disk space back, locks released, every station that ran running again."""
        for proxy in self.links.values():
            proxy.throttle(None)
            proxy.refuse(False)
            proxy.resume()
        for name in self.hung_brokers():
            self.log('heal: the %s does not answer; killed and started again' % name)
            self.revive(name)
        for server in (self.broker, self.internet, self.mariadb):
            if server.running:
                os.kill(server.pid, signal.SIGCONT)
            else:
                server.start()
        for name in list(self.procs):
            if self.running(name):
                self.procs[name].signal(signal.SIGCONT)
            else:
                self.log('heal: %s\'s weewxd had exited by itself (status %s); started again'
                         % (name, self.procs[name].returncode))
                self.start_station(name)
        self.release_disk()
        self.release_locks()
        self.release()

    # --- the end -------------------------------------------------------------------------------

    def stop_stations(self):
        for name, proc in self.procs.items():
            if proc is not None and proc.alive():
                proc.signal(signal.SIGCONT)
                proc.stop()

    def close(self):
        """Stop everything this cluster started, by PID; unmount the tmpfs."""
        self.release_locks()
        try:
            self.stations.cleanup()
        finally:
            for proxy in self.links.values():
                proxy.stop()
            for broker in self.brokers:
                try:
                    broker.stop()
                except Exception:
                    broker.kill()
            if self.mariadb is not None:
                self.mariadb.stop()
            if self.tmpfs is not None:
                subprocess.run(['umount', '-l', str(self.tmpfs)], check=False)
                self.tmpfs = None


def answers(broker, timeout=5.0):
    """Does the broker answer an MQTT 3.1.1 CONNECT with a CONNACK (any return code)?"""
    client = b'nemesis-probe'
    body = b'\x00\x04MQTT\x04\x02\x00\x3c' + len(client).to_bytes(2, 'big') + client
    try:
        with socket.create_connection((broker.host, broker.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b'\x10' + bytes([len(body)]) + body)
            return sock.recv(4)[:1] == b'\x20'
    except OSError:
        return False


def process_state(pid):
    """State and CPU seconds of a process, from /proc (how a hung server hangs)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        ticks = os.sysconf('SC_CLK_TCK')
        return 'state %s, %.1f s of CPU' % (fields[0], (int(fields[11]) + int(fields[12]))
                                            / ticks)
    except (OSError, ValueError, IndexError):
        return 'state unknown'
