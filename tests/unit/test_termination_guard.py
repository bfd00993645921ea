"""driver.TerminationGuard: a SIGTERM whose Terminate the logging module swallowed still
stops the engine."""

import os
import signal

import pytest

from user.mqttreplicate.driver import TerminationGuard


class Terminate(Exception):
    """weewxd's own (weewxd.py): raised by its SIGTERM handler."""


@pytest.fixture
def weewxd_handler():
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        raise Terminate()

    old = signal.signal(signal.SIGTERM, handler)
    yield calls
    signal.signal(signal.SIGTERM, old)


def test_a_terminate_lost_in_a_log_call_is_raised_again(weewxd_handler):
    guard = TerminationGuard()
    guard.check()                                   # nothing happened: nothing raised
    try:
        os.kill(os.getpid(), signal.SIGTERM)        # weewxd's handler runs and raises ...
    except Terminate:
        pass                                        # ... and logging swallows it
    assert weewxd_handler == [signal.SIGTERM]
    with pytest.raises(Terminate):
        guard.check()                               # the engine thread raises it again
    guard.check()                                   # once
    guard.remove()
    assert signal.getsignal(signal.SIGTERM) is not guard._on_signal


def test_remove_gives_weewxd_its_handler_back(weewxd_handler):
    before = signal.getsignal(signal.SIGTERM)
    guard = TerminationGuard()
    assert signal.getsignal(signal.SIGTERM) == guard._on_signal
    guard.remove()
    assert signal.getsignal(signal.SIGTERM) is before
