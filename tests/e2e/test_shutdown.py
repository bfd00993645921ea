"""Stopping weewxd (SIGTERM) at the worst moments.

weewxd turns SIGTERM into an exception, ``Terminate``, raised in its main thread wherever
that thread happens to be; the engine then shuts down cleanly.  The engine thread runs the
responder's NEW_ARCHIVE_RECORD handler on the primary and the driver (genLoopPackets) on a
secondary, so a SIGTERM regularly lands inside the extension's code.  These tests put it
there deterministically with the fault-injection services of station_services.py.

Each case then starts the stopped station again (without the injection) and ends as every
replication does: the secondary equal to the primary, and each side's status showing what
the other has.
"""

import pytest

from tests.e2e.replication import INTERVAL, KnownBug, wait_until
from tests.support.measure import Fault
from tests.support.station import TERMINATING

pytestmark = pytest.mark.e2e


def expect(condition, message):
    if not condition:
        raise KnownBug(message)


def test_sigterm_inside_the_responder_stops_the_primary(replication, fault_report):
    fault = Fault(fault_report,
                  "SIGTERM landing inside the weewxd primary's responder (its NEW_ARCHIVE_RECORD "
                  'handler); the primary started again',
                  'weewxd stops cleanly within 8 s; started again, the secondary ends equal')
    rep = replication()
    rep.seed(days=1)
    rep.inject('SigtermInResponder', sigterm_in_responder=rep.history_end + 20 * INTERVAL)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    pri.wait_for_log(r'e2e: sending SIGTERM to myself inside the responder', timeout=30)
    try:
        pri.wait_for_log(TERMINATING, timeout=8)
    except AssertionError:
        swallowed = 'cannot publish' in pri.log_text()
        raise KnownBug('weewxd still runs 8 s after SIGTERM%s'
                       % (' (the responder logged the Terminate as a publishing error)'
                          if swallowed else ''))
    assert pri.wait(15) == -15

    rep.inject(None)
    pri = rep.start_primary()
    position, _ = rep.wait_caught_up(sec, timeout=90)
    rep.wait_live(since=position, n=10)
    rep.finish(pri, [sec], fault=fault)


def test_sigterm_inside_the_requester_stops_the_secondary(replication, fault_report):
    fault = Fault(fault_report,
                  "SIGTERM landing inside the weewxd secondary's requester (its ack); the "
                  'secondary started again',
                  'weewxd stops cleanly within 8 s; started again, it catches up; equal')
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

    rep.inject(None, station=rep.secondary)
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec, timeout=90)
    rep.wait_live(since=position, n=10)
    rep.finish(pri, [sec], fault=fault)


def test_record_committed_before_sigterm_reaches_the_secondary(replication, fault_report):
    fault = Fault(fault_report,
                  'weewxd primary stopped by SIGTERM right after committing a record, before '
                  'publishing it; the primary started again',
                  'the record reaches the secondary before the primary is back; equal')
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

    rep.inject(None)
    pri = rep.start_primary()
    rep.wait_live(since=stop_at, n=10)
    rep.finish(pri, [sec], fault=fault)
