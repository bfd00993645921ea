"""Polling with a deadline, for tests that wait on real processes and brokers."""

import time


def wait_until(predicate, timeout=15.0, what='condition', interval=0.05, describe=None):
    """Poll predicate() until it is truthy; return its value, or fail naming `what` (and
    what describe() says) after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = ('\n' + describe()) if describe else ''
            raise AssertionError('timed out after %.0f s waiting for %s%s'
                                 % (timeout, what, extra))
        time.sleep(interval)
