"""Killing the processes the tests start."""

import os
import signal


def kill_group(proc):
    """SIGKILL a process started in a session of its own, with its whole process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


class LocalServer:
    """What every server the tests start (Mosquitto, MariaDB, ejabberd) shares: one process,
    on a free loopback port chosen at its first start, and a start() that chooses again if
    another process took the port meanwhile. A subclass gives _spawn(timeout), which raises
    start_error (naming port_taken when the port was taken), and start_timeout."""

    proc = None
    port = 0
    start_error = RuntimeError
    port_taken = 'Address already in use'
    start_timeout = 15.0

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _choose_ports(self):
        from tests.support.broker import free_port
        self.port = free_port()

    def start(self, timeout=None):
        """Start the server (on the same port and data as before, if it ran already)."""
        if self.running:
            return self
        timeout = self.start_timeout if timeout is None else timeout
        first = self.port == 0
        attempts = 5 if first else 1
        for attempt in range(attempts):
            if first:
                self._choose_ports()
            try:
                self._spawn(timeout)
                return self
            except self.start_error as e:
                if not (first and self.port_taken in str(e)) or attempt == attempts - 1:
                    raise
        return self  # pragma: no cover
