"""Fault handling shared by every thread of MQTTReplicate: telling weewxd's Terminate from
the failures a thread must survive, and logging a recurring failure without flooding the log.
"""

import threading
import time


def is_termination(exc):
    """True for weewxd's Terminate: weewxd turns SIGTERM into an exception raised wherever
    the engine thread happens to be, so a handler that catches Exception must re-raise it."""
    return type(exc).__name__ == 'Terminate'


class RateLimitedLog:
    """Logs a message of a given kind at most once per interval; counts what it held back."""

    def __init__(self, logger, interval=300.0):
        self.logger = logger
        self.interval = interval
        self.last = {}
        self.held = {}
        self.lock = threading.Lock()

    def __call__(self, level, kind, message, *args):
        now = time.monotonic()
        with self.lock:
            last = self.last.get(kind)
            if last is not None and now - last < self.interval:
                self.held[kind] = self.held.get(kind, 0) + 1
                return
            self.last[kind] = now
            held = self.held.pop(kind, 0)
        if held:
            message += ' (%d similar messages suppressed)' % held
        self.logger.log(level, message, *args)
