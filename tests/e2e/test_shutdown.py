"""Stopping weewxd (SIGTERM) at the worst moments.

weewxd turns SIGTERM into an exception, ``Terminate``, raised in its main thread wherever
that thread happens to be; the engine then shuts down cleanly.  The engine thread runs the
responder's NEW_ARCHIVE_RECORD handler on the primary and the driver (genLoopPackets) on a
secondary, so a SIGTERM regularly lands inside the extension's code.  These tests put it
there deterministically with the fault-injection services of station_services.py.
"""

import pytest

from tests.e2e.replication import INTERVAL, KnownBug, assert_clean_secondary_log, wait_until
from tests.support.station import TERMINATING

pytestmark = pytest.mark.e2e


def expect(condition, message):
    if not condition:
        raise KnownBug(message)


def test_sigterm_inside_the_responder_stops_the_primary(replication):
    rep = replication()
    rep.seed(days=1)
    rep.inject('SigtermInResponder', sigterm_in_responder=rep.history_end + 20 * INTERVAL)
    pri = rep.start_primary()
    pri.wait_for_log(r'e2e: sending SIGTERM to myself inside the responder', timeout=30)
    try:
        pri.wait_for_log(TERMINATING, timeout=8)
    except AssertionError:
        swallowed = 'cannot publish' in pri.log_text()
        raise KnownBug('weewxd still runs 8 s after SIGTERM%s'
                       % (' (the responder logged the Terminate as a publishing error)'
                          if swallowed else ''))
    assert pri.wait(15) == -15


def test_sigterm_inside_the_requester_stops_the_secondary(replication):
    rep = replication()
    rep.seed(days=1)
    rep.inject('SigtermInRequesterAck', station=rep.secondary, sigterm_in_requester_ack='true')
    pri = rep.start_primary()
    sec = rep.start_secondary()
    sec.wait_for_log(r"e2e: sending SIGTERM to myself inside the requester's ack", timeout=30)
    try:
        sec.wait_for_log(TERMINATING, timeout=8)
    except AssertionError:
        raise KnownBug('the secondary still runs 8 s after SIGTERM')
    assert sec.wait(15) == -15
    pri.stop()


@pytest.mark.slow
def test_record_committed_before_sigterm_reaches_the_secondary(replication):
    rep = replication()
    rep.seed(days=1)
    stop_at = rep.history_end + 60 * INTERVAL
    rep.inject('SignalAfterCommit', signal_after_commit=stop_at, signal='TERM')
    rep.hold_at(rep.history_end + 10 * INTERVAL)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    rep.release()                      # the primary stops itself after committing stop_at
    assert pri.wait(30) == -15, pri.describe()
    assert rep.primary.last_timestamp() == stop_at
    wait_until(lambda: (rep.secondary.last_timestamp() or 0) >= stop_at - INTERVAL, 15,
               'the live records before the SIGTERM')
    try:
        rep.wait_in_sync(timeout=10)
    except AssertionError as e:
        raise KnownBug(str(e))
    sec.stop()
    rep.assert_equal()
    assert_clean_secondary_log(rep.secondary)
