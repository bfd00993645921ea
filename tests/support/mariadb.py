"""A private MariaDB server for tests.

Each :class:`MariaDB` initialises its own data directory (``mariadb-install-db``) in its work
directory and runs ``mariadbd`` in the foreground on a free loopback port and a private
socket, with a user and password of its own.  It never touches port 3306 or a server the
machine may already run, and it is stopped by its PID.

    server = MariaDB(tmp_path / 'mariadb')                    # started
    name = server.new_database()                              # a fresh name, not created yet
    server.configure(station, 'wx_binding', name)             # the binding is on MySQL now
    server.restart(); server.kill(); server.start(); server.stop()
    with server.root() as con: ...                            # pymysql, as root, over the socket

A server that cannot be started raises :class:`MariaDBError` (with the tail of its error
log): the fixtures let it fail the test, never skip it (CI installs the server).
"""

import atexit
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
import weakref
from pathlib import Path
from typing import Optional

from tests.support.broker import HOST, port_open
from tests.support.processes import LocalServer

USER = 'replicate'
PASSWORD = 'replicate-pw-%s' % uuid.uuid4().hex[:8]

_LIVE = weakref.WeakSet()
_NAMES = itertools.count(1)


class MariaDBError(RuntimeError):
    """The server could not be initialised or started."""


def _find(name):
    for path in (shutil.which(name), '/usr/sbin/' + name, '/usr/bin/' + name,
                 '/usr/local/sbin/' + name, '/usr/local/bin/' + name):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise MariaDBError('%s not found (run scripts/setup: it installs mariadb-server)' % name)


class MariaDB(LocalServer):
    """A private mariadbd listening on 127.0.0.1 only.

    max_allowed_packet: the server's limit in bytes (default: the server's, 16 MiB).
    fast: no fsync per commit (innodb_flush_log_at_trx_commit = 2, no doublewrite) and every
    table in the system tablespace (a database's ~115 tables are created in a fraction of the
    time): the tests' data must survive a restart of the server, not of the machine.
    """

    start_error = MariaDBError
    port_taken = 'already in use'
    start_timeout = 60.0


    def __init__(self, workdir, *, max_allowed_packet: Optional[int] = None, fast=True,
                 start=True):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.datadir = self.workdir / 'data'
        self.socket = str(self.workdir / 'mariadb.sock')
        self.pid_file = self.workdir / 'mariadb.pid'
        self.error_log = self.workdir / 'error.log'
        self.console_path = self.workdir / 'console.log'
        self.host = HOST
        self.port = 0
        self.user = USER
        self.password = PASSWORD
        self.max_allowed_packet = max_allowed_packet
        self.fast = fast
        self.proc: Optional[subprocess.Popen] = None
        self._console = None
        self.os_user = pwd.getpwuid(os.geteuid()).pw_name
        _LIVE.add(self)
        self._install()
        if start:
            self.start()
            self._create_user()

    # -- setting up ----------------------------------------------------------------------------

    def _install(self):
        args = [_find('mariadb-install-db'), '--no-defaults', '--datadir=%s' % self.datadir,
                '--user=%s' % self.os_user, '--auth-root-authentication-method=normal',
                '--skip-test-db', '--skip-name-resolve']
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise MariaDBError('mariadb-install-db failed (%s):\n%s%s'
                               % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))

    def _args(self):
        args = [_find('mariadbd'), '--no-defaults', '--datadir=%s' % self.datadir,
                '--user=%s' % self.os_user, '--bind-address=%s' % self.host,
                '--port=%d' % self.port, '--skip-networking=0', '--socket=%s' % self.socket,
                '--pid-file=%s' % self.pid_file, '--log-error=%s' % self.error_log,
                '--skip-name-resolve', '--skip-log-bin', '--innodb-buffer-pool-size=128M',
                '--character-set-server=utf8mb4', '--max-connections=200']
        if self.fast:
            args += ['--innodb-flush-log-at-trx-commit=2', '--innodb-doublewrite=0',
                     '--innodb-file-per-table=0']
        if self.max_allowed_packet:
            args.append('--max-allowed-packet=%d' % self.max_allowed_packet)
        return args

    def _create_user(self):
        with self.root() as con, con.cursor() as cur:
            for host in ('127.0.0.1', 'localhost'):
                cur.execute("CREATE USER IF NOT EXISTS '%s'@'%s' IDENTIFIED BY '%s'"
                            % (self.user, host, self.password))
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO '%s'@'%s'" % (self.user, host))

    # -- life cycle ----------------------------------------------------------------------------

    def _spawn(self, timeout):
        offset = self.error_log.stat().st_size if self.error_log.exists() else 0
        self._close_console()
        self._console = open(self.console_path, 'ab')
        self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL,
                                     stdout=self._console, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise MariaDBError('mariadbd exited with status %s at start:\n%s'
                                   % (rc, self._tail(offset)))
            if 'ready for connections' in self._log_since(offset) \
                    and port_open(self.host, self.port):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise MariaDBError('mariadbd did not answer on %s:%s within %.0f s:\n%s'
                                   % (self.host, self.port, timeout, self._tail(offset)))
            time.sleep(0.05)

    def stop(self, timeout: float = 60.0) -> Optional[int]:
        """SIGTERM (a clean shutdown), wait, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.terminate()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self._ended()

    def kill(self) -> Optional[int]:
        """SIGKILL: a server crash."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        return self._ended()

    def restart(self, timeout: float = 60.0) -> 'MariaDB':
        self.stop()
        return self.start(timeout)

    def _ended(self):
        rc = self.proc.returncode
        self.proc = None
        self._close_console()
        return rc

    def _close_console(self):
        if self._console is not None:
            self._console.close()
            self._console = None

    # -- logs ----------------------------------------------------------------------------------

    def _log_since(self, offset=0):
        try:
            with open(self.error_log, 'rb') as f:
                f.seek(offset)
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def _tail(self, offset=0, lines=40):
        text = self._log_since(offset)
        try:
            text += self.console_path.read_text(errors='replace')
        except FileNotFoundError:
            pass
        return '\n'.join(text.splitlines()[-lines:])

    # -- using it ------------------------------------------------------------------------------

    def root(self, database=None):
        """A pymysql connection as root over the private socket (close it)."""
        import pymysql
        return pymysql.connect(unix_socket=self.socket, user='root', password='',
                               database=database, autocommit=True)

    def execute(self, sql, args=None, database=None):
        """Run one statement as root; the rows it returned."""
        with self.root(database) as con, con.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    @staticmethod
    def new_database(prefix='t'):
        """A database name no test used before (the database is not created)."""
        return '%s_%d_%s' % (prefix, next(_NAMES), uuid.uuid4().hex[:6])

    def type_options(self, user=None, password=None):
        """[DatabaseTypes][[MySQL]] for this server."""
        return {'driver': 'weedb.mysql', 'host': self.host, 'port': str(self.port),
                'user': user or self.user, 'password': password or self.password}

    def configure(self, station, binding='wx_binding', database_name=None, *, user=None,
                  password=None):
        """Put a station's binding on this server: [DatabaseTypes][[MySQL]] with host, port,
        user and password, a [[Databases]] entry database_name (default: a new name) of type
        MySQL, and the binding pointing at it. Returns the database name."""
        database_name = database_name or self.new_database()
        entry = 'mysql_' + binding

        def edit(config):
            config.setdefault('DatabaseTypes', {})['MySQL'] = self.type_options(user, password)
            config['Databases'][entry] = {'database_name': database_name,
                                          'database_type': 'MySQL'}
            bindings = config['DataBindings']
            if binding not in bindings:
                bindings[binding] = {'table_name': 'archive',
                                     'manager': 'weewx.manager.DaySummaryManager',
                                     'schema': 'weewx.schemas.wview_extended.schema'}
            bindings[binding]['database'] = entry
        station.edit(edit)
        return database_name

    def __repr__(self):
        return '<MariaDB %s:%s %s>' % (self.host, self.port,
                                       'running' if self.running else 'stopped')


@atexit.register
def _kill_all() -> None:       # safety net: the fixtures stop their servers
    for server in list(_LIVE):
        try:
            server.kill()
        except Exception:
            pass
