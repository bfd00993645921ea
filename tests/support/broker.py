"""A private Mosquitto broker for tests.

Each :class:`Broker` runs its own ``mosquitto -c <conf>`` (foreground, not a daemon) on free
loopback ports with a config, log, password/ACL files, certificates and persistence directory in
its own work directory.  Nothing here ever touches port 1883 or a system Mosquitto service.

    broker = Broker(tmp_path / 'broker')                      # plain, anonymous
    broker = Broker(tmp_path / 'b', password=True)            # users primary/secondary
    broker = Broker(tmp_path / 'b', tls=True)                 # + TLS listener on .tls_port
    broker = Broker(tmp_path / 'b', tls=True, require_certificate=True)
    broker = Broker(tmp_path / 'b', persistence=True)         # survives restart()
    broker = Broker(tmp_path / 'b', acl='user primary\\ntopic readwrite #\\n', password=True)
    broker = Broker(tmp_path / 'b', bridge='connection x\\naddress ...')   # + a bridge
    ...
    broker.restart(); broker.kill(); broker.start(); broker.stop(); broker.log_text()
"""

import atexit
import base64
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from tests.support.processes import LocalServer, kill_group

HOST = '127.0.0.1'

DEFAULT_USERS = {'primary': 'primary-pw', 'secondary': 'secondary-pw'}

# Every Broker ever started in this process, so that nothing outlives the test run.
_LIVE = weakref.WeakSet()


class BrokerError(RuntimeError):
    """The broker could not be started (the message includes the tail of its log)."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary ($MOSQUITTO, PATH, then /usr/sbin, /usr/local/sbin)."""
    candidates = [os.environ.get('MOSQUITTO'), shutil.which('mosquitto'),
                  '/usr/sbin/mosquitto', '/usr/local/sbin/mosquitto']
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise BrokerError('mosquitto not found (run scripts/setup, or set $MOSQUITTO)')


def find_mosquitto_passwd() -> Optional[str]:
    for path in (shutil.which('mosquitto_passwd'), '/usr/bin/mosquitto_passwd',
                 '/usr/sbin/mosquitto_passwd'):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _ephemeral_range():
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = HOST) -> int:
    """A TCP port on host that is free right now, outside the kernel's ephemeral range.

    A client that keeps reconnecting to a port nobody listens on (a broker stopped, or not
    started yet) can be given that very port as its own source port and connect to itself
    (TCP simultaneous open); the port is then taken when the broker starts. Ports outside
    the ephemeral range are never handed out as source ports."""
    low, high = _ephemeral_range()
    candidates = [p for p in range(20000, 32768) if not low <= p <= high] or \
        [p for p in range(10000, 65536) if not low <= p <= high]
    for _ in range(200):
        port = secrets.choice(candidates)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise BrokerError('no free port outside the ephemeral range on %s' % host)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def mosquitto_password_hash(password: str, *, iterations: int = 101,
                            salt: Optional[bytes] = None) -> str:
    """A Mosquitto 2.0 password-file hash ("$7$": PBKDF2-SHA512), as mosquitto_passwd writes."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac('sha512', password.encode('utf-8'), salt, iterations)
    return '$7$%d$%s$%s' % (iterations, base64.b64encode(salt).decode('ascii'),
                            base64.b64encode(digest).decode('ascii'))


def write_password_file(path: Path, users: Dict[str, str], *, use_tool: bool = True) -> None:
    """Write a Mosquitto password file for users ({name: password}).

    Uses ``mosquitto_passwd -b [-c]`` when it is installed (and use_tool), else computes the
    same "$7$" hashes in Python.
    """
    path = Path(path)
    if path.exists():
        path.unlink()
    tool = find_mosquitto_passwd() if use_tool else None
    if tool:
        for i, (user, password) in enumerate(users.items()):
            args = [tool, '-b'] + (['-c'] if i == 0 else []) + [str(path), user, password]
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=30)
        if not users:
            path.write_text('')
    else:
        path.write_text(''.join('%s:%s\n' % (user, mosquitto_password_hash(password))
                                for user, password in users.items()))
    os.chmod(path, 0o600)


# ------------------------------------------------------------------------------------------------
# Certificates (openssl CLI)
# ------------------------------------------------------------------------------------------------

@dataclass
class Certs:
    """Paths of a test PKI: a CA, a server certificate and a client certificate."""
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


_CA_CONF = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = {cn}
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_LEAF_EXT = """\
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
{san}
"""


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(['openssl'] + list(args), cwd=str(cwd), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=60)
    if proc.returncode != 0:
        raise BrokerError('openssl %s failed:\n%s'
                          % (' '.join(args), proc.stdout.decode('utf-8', 'replace')))


def make_certs(directory: Path, *, ca_cn: str = 'MQTTReplicate Test CA',
               server_dns=('localhost',), server_ips=('127.0.0.1',),
               client_cn: str = 'secondary', days: int = 3) -> Certs:
    """Create a CA, a server cert (SAN: server_ips and server_dns) and a client cert.

    Keys are EC P-256 (fast to generate), unencrypted.  Each call makes a new, unrelated CA,
    so a second call gives certificates that the first CA does not trust.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
    (d / 'ca.cnf').write_text(_CA_CONF.format(cn=ca_cn))
    _openssl('req', '-x509', *ec, '-config', 'ca.cnf', '-keyout', 'ca.key', '-out', 'ca.crt',
             '-days', str(days), '-sha256', cwd=d)

    def leaf(name, cn, usage, san):
        (d / (name + '.ext')).write_text(_LEAF_EXT.format(usage=usage, san=san))
        _openssl('req', '-new', *ec, '-subj', '/CN=%s' % cn, '-keyout', name + '.key',
                 '-out', name + '.csr', cwd=d)
        _openssl('x509', '-req', '-in', name + '.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key',
                 '-set_serial', '0x%s' % secrets.token_hex(8), '-days', str(days), '-sha256',
                 '-extfile', name + '.ext', '-extensions', 'ext', '-out', name + '.crt', cwd=d)

    alt = ['IP:%s' % ip for ip in server_ips] + ['DNS:%s' % dns for dns in server_dns]
    leaf('server', (list(server_dns) or list(server_ips))[0], 'serverAuth',
         'subjectAltName = ' + ', '.join(alt) if alt else '')
    leaf('client', client_cn, 'clientAuth', '')
    for key in ('ca.key', 'server.key', 'client.key'):
        os.chmod(d / key, 0o600)
    return Certs(ca_cert=d / 'ca.crt', ca_key=d / 'ca.key',
                 server_cert=d / 'server.crt', server_key=d / 'server.key',
                 client_cert=d / 'client.crt', client_key=d / 'client.key')


# ------------------------------------------------------------------------------------------------
# The broker
# ------------------------------------------------------------------------------------------------

class Broker(LocalServer):
    """A private Mosquitto broker listening on 127.0.0.1 only.

    Keyword arguments select the variant (they combine freely):

    password
        True: users ``primary/primary-pw`` and ``secondary/secondary-pw``, anonymous refused.
    users
        {name: password}; implies password authentication.
    allow_anonymous
        Default: True unless users/password are given.
    tls
        Adds a TLS listener on ``.tls_port`` (certs from :func:`make_certs`, server SAN
        IP:127.0.0.1 and DNS:localhost).  The plain listener on ``.port`` stays.
    require_certificate
        TLS listener requires a client certificate signed by the CA (implies tls).
    acl
        Text of an ACL file (``user``/``topic``/``pattern`` lines).
    persistence
        ``persistence true`` with ``persistence_location`` in the work dir; kept across
        stop()/start()/restart() and kill() (up to the last autosave).
    autosave_interval
        Seconds between persistence saves (default 1).
    max_queued_messages, max_inflight_messages
        Per-client limits (defaults 100000 and 20).
    extra_config
        Text appended to mosquitto.conf (global options only, e.g. ``max_packet_size 10000``).
    bridge
        Text of bridge sections (``connection <name>`` and its options), written at the end of
        mosquitto.conf, after the listeners. The attribute can be changed before start() or
        restart() (e.g. to point the bridge at another address).
    start
        Start at once (default True).

    Attributes: ``host`` ('127.0.0.1'), ``port``, ``tls_port`` (None without TLS),
    ``ca_certs``, ``client_cert``, ``client_key`` (None without TLS), ``certs``, ``users``
    (dict, empty when anonymous), ``workdir``, ``conf_path``, ``log_path``,
    ``persistence_dir``.
    """

    start_error = BrokerError
    port_taken = 'Address already in use'
    start_timeout = 15.0


    def __init__(self, workdir, *, password: bool = False, users: Optional[Dict[str, str]] = None,
                 allow_anonymous: Optional[bool] = None, tls: bool = False,
                 require_certificate: bool = False, acl: Optional[str] = None,
                 persistence: bool = False, autosave_interval: int = 1,
                 max_queued_messages: int = 100000, max_inflight_messages: int = 20,
                 extra_config: str = '', use_passwd_tool: bool = True, start: bool = True,
                 bridge: str = ''):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.executable = find_mosquitto()
        if users is None and password:
            users = dict(DEFAULT_USERS)
        self.users: Dict[str, str] = dict(users or {})
        self.allow_anonymous = (not self.users) if allow_anonymous is None else allow_anonymous
        self.tls = bool(tls or require_certificate)
        self.require_certificate = bool(require_certificate)
        self.acl = acl
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.extra_config = extra_config
        self.bridge = bridge

        self.conf_path = self.workdir / 'mosquitto.conf'
        self.log_path = self.workdir / 'mosquitto.log'
        self.console_path = self.workdir / 'mosquitto.console'
        self.password_file = self.workdir / 'passwd' if self.users else None
        self.acl_file = self.workdir / 'acl' if acl is not None else None
        self.persistence_dir = self.workdir / 'persistence'
        if persistence:
            self.persistence_dir.mkdir(exist_ok=True)

        self.certs: Optional[Certs] = make_certs(self.workdir / 'certs') if self.tls else None
        self.ca_certs = str(self.certs.ca_cert) if self.certs else None
        self.client_cert = str(self.certs.client_cert) if self.certs else None
        self.client_key = str(self.certs.client_key) if self.certs else None

        if self.password_file:
            write_password_file(self.password_file, self.users, use_tool=use_passwd_tool)
        if self.acl_file:
            self.acl_file.write_text(acl if acl.endswith('\n') else acl + '\n')
            os.chmod(self.acl_file, 0o600)

        self.port: int = 0
        self.tls_port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._console = None
        _LIVE.add(self)
        if start:
            self.start()

    # -- configuration -------------------------------------------------------------------------

    def _config_text(self) -> str:
        lines = [
            '# generated by tests/support/broker.py',
            'per_listener_settings false',
            'user %s' % pwd.getpwuid(os.geteuid()).pw_name,   # no privilege drop when root
            'allow_anonymous %s' % ('true' if self.allow_anonymous else 'false'),
            'log_dest file %s' % self.log_path,
            'log_type all',
            'log_timestamp true',
            'log_timestamp_format %Y-%m-%dT%H:%M:%S',
            'connection_messages true',
            'max_queued_messages %d' % self.max_queued_messages,
            'max_inflight_messages %d' % self.max_inflight_messages,
            'set_tcp_nodelay true',
        ]
        if self.persistence:
            lines += ['persistence true',
                      'persistence_location %s/' % self.persistence_dir,
                      'persistence_file mosquitto.db',
                      'autosave_interval %d' % self.autosave_interval]
        else:
            lines.append('persistence false')
        if self.password_file:
            lines.append('password_file %s' % self.password_file)
        if self.acl_file:
            lines.append('acl_file %s' % self.acl_file)
        if self.extra_config:
            lines.append(self.extra_config)
        lines += ['', 'listener %d %s' % (self.port, self.host)]
        if self.tls:
            lines += ['', 'listener %d %s' % (self.tls_port, self.host),
                      'cafile %s' % self.certs.ca_cert,
                      'certfile %s' % self.certs.server_cert,
                      'keyfile %s' % self.certs.server_key,
                      'require_certificate %s' % ('true' if self.require_certificate else 'false')]
        if self.bridge:
            # last: every option after `connection` belongs to that bridge
            lines += ['', self.bridge.strip()]
        return '\n'.join(lines) + '\n'

    # -- life cycle ----------------------------------------------------------------------------

    def _choose_ports(self) -> None:
        self.port = free_port()
        self.tls_port = free_port() if self.tls else None
        while self.tls and self.tls_port == self.port:
            self.tls_port = free_port()

    def _spawn(self, timeout: float) -> None:
        self.conf_path.write_text(self._config_text())
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._close_console()
        self._console = open(self.console_path, 'ab')
        self.proc = subprocess.Popen([self.executable, '-c', str(self.conf_path)],
                                     stdin=subprocess.DEVNULL, stdout=self._console,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise BrokerError('mosquitto exited with status %s at start:\n%s'
                                  % (rc, self._tail(offset)))
            # "mosquitto version X running" is logged after every listener is bound.  (No TCP
            # probe: it would add connection lines to the log that tests may count.)
            if re.search(r'mosquitto version \S+ running', self._log_since(offset)):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError('mosquitto did not listen on %s:%s within %.0f s:\n%s'
                                  % (self.host, ports, timeout, self._tail(offset)))
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGTERM (mosquitto saves persistence), wait, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)   # in case it was paused
                self.proc.terminate()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._killpg()
                self.proc.wait(10)
        rc = self.proc.returncode
        self.proc = None
        self._close_console()
        return rc

    def kill(self) -> Optional[int]:
        """SIGKILL: no goodbye, no persistence save (an abrupt broker crash)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._killpg()
            self.proc.wait(10)
        rc = self.proc.returncode
        self.proc = None
        self._close_console()
        return rc

    def restart(self, timeout: float = 15.0) -> 'Broker':
        """stop() then start() on the same port(s) with the same persistence directory."""
        self.stop()
        return self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: the broker hangs (TCP stays open, nothing is answered)."""
        if self.running:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.running:
            os.kill(self.proc.pid, signal.SIGCONT)

    def _killpg(self) -> None:
        kill_group(self.proc)

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None

    # -- logs ----------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything mosquitto logged (all runs of this broker)."""
        try:
            return self.log_path.read_text(encoding='utf-8', errors='replace')
        except FileNotFoundError:
            return ''

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(offset)
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def _tail(self, offset: int = 0, lines: int = 40) -> str:
        text = self._log_since(offset)
        try:
            text += self.console_path.read_text(errors='replace')
        except FileNotFoundError:
            pass
        return '\n'.join(text.splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float = 10.0, offset: int = 0):
        """Wait until the broker log (from byte offset) matches regex pattern; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self._log_since(offset))
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError('broker log did not match %r within %.0f s:\n%s'
                                     % (pattern, timeout, self._tail(offset)))
            time.sleep(0.05)

    def log_size(self) -> int:
        """Current size of the log file: pass it as offset to wait_for_log()."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    # -- convenience ---------------------------------------------------------------------------

    def connection_options(self, *, tls: bool = False, user: Optional[str] = None,
                           client_cert: bool = False) -> dict:
        """Options as the extension's config would spell them (host, port, username, password,
        and a 'tls' dict), for building [MQTTReplicate] stanzas in tests."""
        opts = {'host': self.host, 'port': self.tls_port if tls else self.port}
        if user is not None:
            opts['username'] = user
            opts['password'] = self.users[user]
        if tls:
            t = {'enable': True, 'ca_certs': self.ca_certs}
            if client_cert:
                t['certfile'] = self.client_cert
                t['keyfile'] = self.client_key
            opts['tls'] = t
        return opts

    def __enter__(self) -> 'Broker':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return '<Broker %s:%s%s %s>' % (self.host, self.port,
                                        ' tls:%s' % self.tls_port if self.tls_port else '',
                                        'running' if self.running else 'stopped')


@atexit.register
def _kill_all_brokers() -> None:   # safety net: fixtures stop brokers; this catches leaks
    for broker in list(_LIVE):
        try:
            broker.kill()
        except Exception:
            pass
