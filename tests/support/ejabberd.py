"""A private ejabberd (its MQTT broker, mod_mqtt) for tests.

Each :class:`Ejabberd` runs Debian's ejabberd release as the current user, in the foreground
(``erl ... -s ejabberd``, as ``ejabberdctl foreground`` would, without its ``su`` to the
ejabberd user and its epmd checks), with its own config, Mnesia spool directory and log in its
own work directory, and only the listeners of the config it is given, on a free loopback port.

The Erlang node is not distributed (no ``-sname``): it registers with no epmd and starts none,
so it can neither clash with a system ejabberd (``ejabberd@localhost``) nor leave a daemon
behind. Nothing here touches /etc/ejabberd, /var/lib/ejabberd, /var/log/ejabberd or a system
service.

    server = Ejabberd(tmp_path / 'ejabberd', config=yaml_text, users={'primary': 'pw'})
    server.host, server.port, server.users, server.version
    server.connection_options(user='primary')     # as Broker.connection_options
    server.restart(); server.stop(); server.log_text()

The config is ejabberd.yml text with one ``port: 1883`` and, optionally, one
``ip: "0.0.0.0"`` line in its listener: they are replaced by the free port and 127.0.0.1.
The users are registered (internal authentication) once the server has started.

ejabberd refuses a CONNECT without a password (an empty password never reaches its
authentication modules), so every client of it needs a user: connection_options() without
a user raises.
"""

import atexit
import os
import re
import signal
import subprocess
import time
import weakref
from pathlib import Path
from typing import Dict, Optional

from tests.support.broker import BrokerError
from tests.support.processes import LocalServer, kill_group

HOST = '127.0.0.1'
ERL = '/usr/bin/erl'
ERL_LIBS = '/usr/lib/x86_64-linux-gnu'        # where Debian installs ejabberd's applications
REGISTERED = 'mqttreplicate-test: users registered'

# A broker with no access rules (everything allowed to every authenticated user).
MINIMAL_CONFIG = """\
hosts:
  - localhost
auth_method: [internal]
listen:
  -
    port: 1883
    ip: "0.0.0.0"
    module: mod_mqtt
    backlog: 1000
modules:
  mod_mqtt:
    session_expiry: 1 day
"""

_LIVE = weakref.WeakSet()


def find_ejabberd() -> Optional[str]:
    """Directory of the installed ejabberd application (None when not installed)."""
    libs = Path(os.environ.get('EJABBERD_ERL_LIBS', ERL_LIBS))
    found = sorted(libs.glob('ejabberd-*/ebin/ejabberd.app'))
    if found and os.access(ERL, os.X_OK):
        return str(found[-1].parent.parent)
    return None


def _erlang_binary(text: str) -> str:
    if not re.fullmatch(r'[A-Za-z0-9._@-]+', text):
        raise ValueError('not a plain user name or password: %r' % text)
    return '<<"%s">>' % text


class Ejabberd(LocalServer):
    """A private ejabberd with mod_mqtt on 127.0.0.1 only (see the module's docstring).

    Attributes as the harness uses them of a Broker: ``host``, ``port``, ``tls_port`` (None),
    ``ca_certs``/``client_cert``/``client_key`` (None), ``users``; and ``workdir``,
    ``conf_path``, ``log_path``, ``spool_dir``, ``version`` (from the log, once started)."""

    start_error = BrokerError
    port_taken = 'eaddrinuse'
    start_timeout = 30.0


    def __init__(self, workdir, *, config: str = MINIMAL_CONFIG,
                 users: Optional[Dict[str, str]] = None, xmpp_host: str = 'localhost',
                 start: bool = True):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.tls_port = None
        self.ca_certs = self.client_cert = self.client_key = None
        self.users: Dict[str, str] = dict(users or {})
        self.xmpp_host = xmpp_host
        self.config = config
        self.conf_path = self.workdir / 'ejabberd.yml'
        self.log_path = self.workdir / 'logs' / 'ejabberd.log'
        self.console_path = self.workdir / 'console.log'
        self.spool_dir = self.workdir / 'spool'
        self.spool_dir.mkdir(exist_ok=True)
        self.log_path.parent.mkdir(exist_ok=True)
        self.version: Optional[str] = None
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self._console = None
        if find_ejabberd() is None:
            raise BrokerError('ejabberd is not installed (run scripts/setup: it installs '
                              "Debian's ejabberd package)")
        _LIVE.add(self)
        if start:
            self.start()

    # -- configuration -------------------------------------------------------------------------

    def config_text(self) -> str:
        """The config as run: the given one, on the free loopback port, plus logging."""
        text, ports = re.subn(r'(?m)^(\s*port:\s*)1883\s*$', r'\g<1>%d' % self.port,
                              self.config)
        if ports != 1:
            raise ValueError('the config needs exactly one "port: 1883" line (found %d)'
                             % ports)
        text, ips = re.subn(r'(?m)^(\s*ip:\s*)"0\.0\.0\.0"\s*$', r'\g<1>"%s"' % self.host, text)
        if ips > 1:
            raise ValueError('the config has %d "ip: "0.0.0.0"" lines, not one' % ips)
        if not ips:
            if not re.search(r'(?m)^\s*ip:\s*"127\.0\.0\.1"\s*$', text):
                raise ValueError('the listener needs an ip line (0.0.0.0 or 127.0.0.1)')
        return (text.rstrip('\n') + '\n\n# added by tests/support/ejabberd.py\n'
                'loglevel: info\nlog_rotate_count: 0\nhide_sensitive_log_data: false\n')

    def _register_expression(self) -> str:
        pairs = ', '.join('{%s, %s}' % (_erlang_binary(u), _erlang_binary(p))
                          for u, p in sorted(self.users.items()))
        host = _erlang_binary(self.xmpp_host)
        return ('Results = [ejabberd_auth:try_register(U, %s, P) || {U, P} <- [%s]], '
                'io:format("%s: ~p~n", [Results])' % (host, pairs, REGISTERED))

    def _environment(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('EJABBERD_', 'ERL_', 'CONTRIB_MODULES_'))
               and k not in ('NOTIFY_SOCKET', 'ERLANG_NODE')}
        env.update(EJABBERD_CONFIG_PATH=str(self.conf_path),
                   EJABBERD_LOG_PATH=str(self.log_path),
                   ERL_LIBS=os.environ.get('EJABBERD_ERL_LIBS', ERL_LIBS),
                   ERL_CRASH_DUMP=str(self.workdir / 'erl_crash.dump'),
                   ERL_CRASH_DUMP_BYTES='0',
                   HOME=str(self.workdir))
        return env

    # -- life cycle ----------------------------------------------------------------------------

    def _spawn(self, timeout: float) -> None:
        self.conf_path.write_text(self.config_text())
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        console_offset = (self.console_path.stat().st_size if self.console_path.exists()
                          else 0)
        self._close_console()
        self._console = open(self.console_path, 'ab')
        args = [ERL, '-noinput', '-noshell',
                '-mnesia', 'dir', '"%s"' % self.spool_dir,
                '-s', 'ejabberd',
                '-eval', self._register_expression()]
        self.proc = subprocess.Popen(args, cwd=str(self.spool_dir), env=self._environment(),
                                     stdin=subprocess.DEVNULL, stdout=self._console,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        listening = re.compile(r'Start accepting TCP connections at %s:%d for mod_mqtt'
                               % (re.escape(self.host), self.port))
        registered = re.compile(re.escape(REGISTERED) + r': \[(.*)\]')
        deadline = time.monotonic() + timeout
        while True:
            log = self._read(self.log_path, log_offset)
            console = self._read(self.console_path, console_offset)
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise BrokerError('ejabberd exited with status %s at start:\n%s'
                                  % (rc, self._tail(log_offset, console_offset)))
            if 'eaddrinuse' in log:
                tail = self._tail(log_offset, console_offset)
                self.stop()
                raise BrokerError('ejabberd could not listen on port %d (eaddrinuse):\n%s'
                                  % (self.port, tail))
            done = registered.search(console)
            if done and listening.search(log):
                results = re.findall(r'ok|\{error,\w+\}', done.group(1))
                if any(r not in ('ok', '{error,exists}') for r in results) \
                        or len(results) != len(self.users):
                    tail = self._tail(log_offset, console_offset)
                    self.stop()
                    raise BrokerError('ejabberd did not register the users: %s\n%s'
                                      % (done.group(0), tail))
                m = re.search(r'ejabberd (\S+) is started', log)
                if m:
                    self.version = m.group(1)
                return
            if time.monotonic() > deadline:
                tail = self._tail(log_offset, console_offset)
                self.kill()
                raise BrokerError('ejabberd did not listen on %s:%d within %.0f s:\n%s'
                                  % (self.host, self.port, timeout, tail))
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM (the Erlang VM shuts down in order), wait, then SIGKILL the group."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)
                self.proc.wait(10)
        rc = self.proc.returncode
        self.proc = None
        self._close_console()
        return rc

    def kill(self) -> Optional[int]:
        """SIGKILL the whole process group (an abrupt crash)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            kill_group(self.proc)
            self.proc.wait(10)
        rc = self.proc.returncode
        self.proc = None
        self._close_console()
        return rc

    def restart(self, timeout: float = 30.0) -> 'Ejabberd':
        """stop() then start() on the same port with the same spool (users, retained
        messages; mod_mqtt keeps its sessions in RAM only)."""
        self.stop()
        return self.start(timeout)

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None

    # -- logs ----------------------------------------------------------------------------------

    @staticmethod
    def _read(path: Path, offset: int = 0) -> str:
        try:
            with open(path, 'rb') as f:
                f.seek(offset)
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def log_text(self) -> str:
        """Everything ejabberd logged (all runs)."""
        return self._read(self.log_path)

    def _tail(self, log_offset: int = 0, console_offset: int = 0, lines: int = 40) -> str:
        text = self._read(self.log_path, log_offset) + self._read(self.console_path,
                                                                    console_offset)
        return '\n'.join(text.splitlines()[-lines:])

    # -- convenience ---------------------------------------------------------------------------

    def connection_options(self, *, tls: bool = False, user: Optional[str] = None,
                           client_cert: bool = False) -> dict:
        """host, port, username, password, as Broker.connection_options spells them."""
        if tls or client_cert:
            raise ValueError('this ejabberd has no TLS listener')
        if user is None:
            raise ValueError('ejabberd refuses connections without a password: give a user '
                             '(one of %s)' % ', '.join(sorted(self.users)))
        return {'host': self.host, 'port': self.port, 'username': user,
                'password': self.users[user]}

    def credentials(self, user: str) -> dict:
        """username/password keyword arguments for tests.support.mqtt.MqttClient."""
        return {'username': user, 'password': self.users[user]}

    def __repr__(self) -> str:
        return '<Ejabberd %s %s:%s %s>' % (self.version or '?', self.host, self.port,
                                           'running' if self.running else 'stopped')


@atexit.register
def _kill_all() -> None:   # safety net: the fixture stops the server; this catches leaks
    for server in list(_LIVE):
        try:
            server.kill()
        except Exception:
            pass
