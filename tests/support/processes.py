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
