"""Either side stops and comes back while the other keeps going: nothing lost, nothing doubled,
and each side's status shows what the other has."""

import time

import pytest

from tests.e2e.replication import CATCHING_UP, INTERVAL, MAIN_KEY, wait_until
from tests.support.measure import Fault

pytestmark = pytest.mark.e2e


def test_secondary_restarts_while_primary_produces(replication, fault_report):
    fault = Fault(fault_report,
                  'weewxd secondary stopped (SIGTERM) and restarted twice while the primary '
                  'produces', 'equal')
    rep = replication()
    rep.seed(days=3)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    rep.wait_live(since=position, n=20)

    # SIGTERM: a clean shutdown (closePort). The primary keeps producing meanwhile; the
    # broker keeps the secondary's persistent session and queues its live records.
    assert sec.stop() == -15, sec.describe()
    stopped_at = rep.secondary.last_timestamp()
    rep.wait_primary_grows(100)

    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    assert position > stopped_at
    rep.wait_live(since=position, n=20)

    # And once more, restarting at once.
    assert sec.stop() == -15, sec.describe()
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    rep.wait_live(since=position, n=10)

    rep.finish(pri, [sec], fault=fault)


@pytest.mark.slow
def test_secondary_killed_during_catch_up(replication, fault_report):
    """kill -9 twice while a 10,000-record backlog is being stored in bulk."""
    fault = Fault(fault_report,
                  'weewxd secondary killed with `kill -9` twice during a 10,000-record catch-up '
                  '(bulk rows in, summaries not yet rebuilt)', 'clean logs; equal')
    rep = replication()
    rep.seed(count=10000)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    sec.wait_for_log(CATCHING_UP % MAIN_KEY, timeout=30)
    # Kill as soon as the first rows of the backlog are in (archive rows stored in bulk,
    # daily summaries not yet rebuilt).
    first = wait_until(lambda: rep.secondary.count_records(), 30,
                       'the first records of the catch-up', interval=0.02)
    sec.kill9()
    at_first_kill = rep.secondary.count_records()
    assert 0 < at_first_kill < rep.seeded, (first, at_first_kill)

    # Again, half-way through the rest of the catch-up.
    sec = rep.start_secondary()
    sec.wait_for_log(CATCHING_UP % MAIN_KEY, timeout=60)
    half_way = at_first_kill + (rep.seeded - at_first_kill) // 2
    wait_until(lambda: rep.secondary.count_records() >= half_way, 60,
               'the catch-up to progress', interval=0.02)
    sec.kill9()
    at_second_kill = rep.secondary.count_records()
    assert at_second_kill < rep.seeded, at_second_kill

    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec, timeout=90)
    assert position > rep.history_end
    rep.wait_live(since=position, n=20)
    rep.finish(pri, [sec], fault=fault)


def test_primary_restarts_while_secondary_runs(replication, fault_report):
    fault = Fault(fault_report,
                  'weewxd primary restarted (SIGTERM); later `kill -9` right after committing a '
                  'record, before publishing it',
                  'the unpublished record reaches the secondary after the restart; equal '
                  '(restarts: engine restarts, not the ones the test makes)')
    rep = replication()
    rep.seed(days=3)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    rep.wait_live(since=position, n=20)

    # SIGTERM between two records (held by the gate, as a real primary rests between archive
    # periods; a SIGTERM in the middle of a record is test_shutdown.py's business).
    newest = rep.hold(pri)
    assert pri.stop() == -15, pri.describe()
    assert rep.primary.last_timestamp() == newest
    time.sleep(1)
    rep.release()
    pri = rep.start_primary()
    rep.wait_live(since=newest, n=20)

    # kill -9 of the primary right after it committed a record, before it published it
    # (fault injection): the secondary cannot know that record until the primary is back;
    # then the first live record carries `prev`, and the secondary fills the hole first.
    newest = rep.hold(pri)
    assert pri.stop() == -15, pri.describe()
    rep.inject('SignalAfterCommit', signal_after_commit=newest + 30 * INTERVAL, signal='KILL')
    rep.release()
    pri = rep.start_primary()
    assert pri.wait(60) == -9, pri.describe()
    killed_at = rep.primary.last_timestamp()
    assert killed_at == newest + 30 * INTERVAL
    wait_until(lambda: rep.secondary.last_timestamp() == killed_at - INTERVAL, 15,
               'the secondary to get the last published record')
    time.sleep(1)
    assert rep.secondary.last_timestamp() == killed_at - INTERVAL

    rep.inject(None)
    pri = rep.start_primary()
    # The record committed but never published reaches the secondary: the restarted
    # responder publishes its newest record on connecting (or, failing that, the next live
    # record's `prev` shows the hole and the secondary asks for it).
    pri.wait_for_log(r'responder: connected to', timeout=30)
    wait_until(lambda: rep.secondary.last_timestamp() >= killed_at, 30,
               'the secondary to get the record committed before the kill')
    rep.wait_live(since=killed_at, n=20)
    newest = killed_at

    rep.finish(pri, [sec], fault=fault)
    assert rep.secondary.last_timestamp() >= newest + 20 * INTERVAL
