"""Compact live records (docs/protocol.md, "Live records"): the record compressed and its
day's daily summaries as a patch of WeeWX's own update, sent while every secondary the
responder knows takes them; plain records with whole days otherwise.

The primaries here add each live record with the LOOP highs and lows of its archive period
(harness.add_to_primary), so a secondary that did not apply the patch, or rebuilt the day,
differs row by row."""

import io
import logging
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import weedb

from tests.integration.harness import (BINDING, START, STEP, assert_same, publish_live,
                                       wait_until)
from tests.support.station import compare_databases
from tests.support.mqtt import user_properties
from user.mqttreplicate import messages, protocol
from user.mqttreplicate.database import day_stop
from user.mqttreplicate.target import COPIED_KEY

pytestmark = pytest.mark.integration

# the seeded history ends 10 records before a midnight: live records cross it
COUNT = (day_stop(START) - START) // STEP + 288 - 10
LAST = START + (COUNT - 1) * STEP
TOPIC = 'replicate/archive/weewx'


def message_bytes(message):
    return len(message.payload) + len(message.topic) + len(message.properties.pack())


def pair(rig, broker, **primary_options):
    primary = rig.primary(broker, count=COUNT, **primary_options)
    secondary = rig.secondary(broker)
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    return primary, secondary, responder, node


def knows(responder, node):
    """Has the responder seen the requester's status?"""
    return node.clientid in responder.secondaries.snapshot()


def live(rig, broker, responder, primary, stamps):
    """Publish records at stamps live; the messages as a subscriber got them."""
    watcher = rig.client(broker)
    watcher.subscribe(TOPIC)
    for ts in stamps:
        publish_live(responder, primary, ts)
    got = []
    while len(got) < len(stamps):
        message = watcher.expect(TOPIC, timeout=10)
        if not message.retain:
            got.append(message)
    return got


def test_live_records_go_compact_and_the_summaries_end_equal(rig, broker, caplog):
    primary, secondary, responder, node = pair(rig, broker)
    wait_until(lambda: knows(responder, node) and responder.compact_live(), 10,
               'the requester status (live: compact)')
    stamps = [LAST + k * STEP for k in range(1, 31)]
    sent = live(rig, broker, responder, primary, stamps)
    wait_until(lambda: node.replica.position == stamps[-1], 15, 'the live records')
    patches = []
    for message in sent:
        props = user_properties(message)
        assert props['encoding'] == protocol.ENCODING_LIVE and 'days' not in props
        assert message_bytes(message) < 1024
        decoded = messages.LiveRecord.decode(messages.Envelope.of(message))
        assert decoded.patch is not None and decoded.days is None
        patches.append(decoded.patch)
    assert len({p.first for p in patches}) == 2                  # across midnight
    assert any(p.cells for p in patches)                          # LOOP highs and lows
    assert 'did not come out' not in caplog.text
    assert_same(primary, secondary)


def test_an_older_requester_gets_plain_records_with_whole_days(rig, broker, monkeypatch,
                                                               caplog):
    """A requester whose status does not say it takes compact live records (an older
    version of this project) gets plain ones with the day's rows, as before; once it is
    offline, compact ones go out again."""
    primary, secondary, responder, node = pair(rig, broker)
    caplog.set_level(logging.INFO, logger='user.mqttreplicate')
    older = rig.secondary(broker, name='older')
    old_node = rig.start_requester(older, wait=False)
    statuses = old_node.requester._statuses
    monkeypatch.setattr(old_node.requester, '_statuses', lambda: {
        i: {k: v for k, v in s.items() if k != 'live'} for i, s in statuses().items()})
    old_node.wait_caught_up(30)
    wait_until(lambda: knows(responder, old_node) and not responder.compact_live(), 10,
               'the older requester seen')
    stamps = [LAST + k * STEP for k in range(1, 6)]
    for message in live(rig, broker, responder, primary, stamps):
        props = user_properties(message)
        assert 'days' in props and 'encoding' not in props
    for n in (node, old_node):
        wait_until(lambda: n.replica.position == stamps[-1], 15, 'the live records')
    assert_same(primary, secondary)
    assert_same(primary, older)
    old_node.stop()
    wait_until(responder.compact_live, 10, 'the older requester offline')
    message, = live(rig, broker, responder, primary, [stamps[-1] + STEP])
    assert user_properties(message)['encoding'] == protocol.ENCODING_LIVE
    switches = [r.getMessage() for r in caplog.records if 'live records go' in r.getMessage()]
    assert switches[-2:] == [
        'responder: live records go plain, with whole days, from now on: %s takes only '
        'plain ones' % old_node.clientid, 'responder: live records go compact from now on']
    wait_until(lambda: node.replica.position == stamps[-1] + STEP, 15, 'the live record')
    assert_same(primary, secondary)


def test_a_patch_that_does_not_fit_brings_the_day(rig, broker, caplog):
    """A secondary whose day differs from the primary's (a hand edit, a lost message) gets
    no wrong day from a patch: it asks for the day. After three such patches in a row its
    status asks for whole days, and the responder sends them."""
    caplog.set_level(logging.INFO, logger='user.mqttreplicate')
    primary, secondary, responder, node = pair(rig, broker)
    wait_until(lambda: knows(responder, node) and responder.compact_live(), 10,
               'the requester status (live: compact)')
    ts = LAST
    for n in range(3):
        with secondary.open_manager('wx_binding') as manager:        # today's row, changed
            day, = manager.getSql('SELECT MAX(dateTime) FROM archive_day_outTemp')
            with weedb.Transaction(manager.connection) as cursor:
                cursor.execute('UPDATE archive_day_outTemp SET sum = sum + 1 WHERE dateTime = ?',
                               (day,))
        ts += STEP
        live(rig, broker, responder, primary, [ts])
        wait_until(lambda: node.replica.position == ts and not node.replica.catching_up, 15,
                   'the live record and the day')
        wait_until(lambda: not _differs(primary, secondary), 15, 'the day brought again')
    assert caplog.text.count("did not give the primary's day here") == 3
    assert 'asking for live records with whole days' in caplog.text
    wait_until(lambda: not responder.compact_live(), 10, 'the status asking for whole days')
    ts += STEP
    message, = live(rig, broker, responder, primary, [ts])
    assert 'days' in user_properties(message)
    wait_until(lambda: node.replica.position == ts, 15, 'the live record')
    assert_same(primary, secondary)


def test_a_day_not_copied_here_yet_is_asked_for_without_trying_the_patch(rig, broker, caplog):
    """The day here is not the primary's through the record before (the replicated position
    of the summaries is older: a catch-up whose last day a newer record cut): the patch is
    not tried, the day comes by catch-up, quietly, and patches work again after it."""
    caplog.set_level(logging.DEBUG, logger='user.mqttreplicate')
    primary, secondary, responder, node = pair(rig, broker)
    wait_until(lambda: knows(responder, node) and responder.compact_live(), 10,
               'the requester status (live: compact)')
    with secondary.open_manager(BINDING) as manager:
        with weedb.Transaction(manager.connection) as cursor:
            manager._write_metadata(COPIED_KEY, str(LAST - 3 * STEP), cursor)
    stamps = [LAST + STEP, LAST + 2 * STEP]
    live(rig, broker, responder, primary, stamps)
    wait_until(lambda: node.replica.position == stamps[-1] and not node.replica.catching_up,
               15, 'the live records')
    assert caplog.text.count("is not the primary's here yet; asking for it") == 1
    assert "did not give the primary's day" not in caplog.text
    assert node.requester.live_compact
    assert_same(primary, secondary)


def _differs(primary, secondary):
    return compare_databases(primary, BINDING, secondary, BINDING)


def test_live_format_json_sends_plain_records(rig, broker):
    primary, secondary, responder, node = pair(rig, broker, live_format='json')
    stamps = [LAST + STEP]
    message, = live(rig, broker, responder, primary, stamps)
    props = user_properties(message)
    assert 'days' in props and 'encoding' not in props
    wait_until(lambda: node.replica.position == stamps[-1], 15, 'the live record')
    assert_same(primary, secondary)


# the commit before compact live records: a requester of the version before (packed pages,
# the days property, compact acks), taken from this repository's history
PREVIOUS = '4853f3f'


def previous_package(station):
    """Put the package as it was at PREVIOUS in place of the station's link to this one."""
    repo = Path(__file__).resolve().parents[2]
    if subprocess.run(['git', '-C', str(repo), 'cat-file', '-e', PREVIOUS + '^{commit}'],
                      capture_output=True).returncode:
        pytest.skip('commit %s is not in this clone (a shallow one)' % PREVIOUS)
    archive = subprocess.run(['git', '-C', str(repo), 'archive', PREVIOUS,
                              'bin/user/mqttreplicate'], capture_output=True,
                             check=True).stdout
    target = station.root / 'bin' / 'user' / 'mqttreplicate'
    if target.is_symlink():
        target.unlink()
    else:
        shutil.rmtree(target)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            member.name = member.name[len('bin/'):]
            tar.extract(member, station.root / 'bin')
    assert 'LIVE_COMPACT' not in (target / 'protocol.py').read_text()


def test_a_requester_of_the_version_before_replicates(rig, broker):
    """The requester as it was before compact live records, as its own process, next to a
    requester of this version: the responder sends plain records while it is there, and
    both end equal to the primary, archive and daily summaries."""
    primary, secondary, responder, node = pair(rig, broker)
    older = rig.secondary(broker, name='older')
    previous_package(older)
    clientid = older.config_dict()['Replicator']['Requester']['clientid']
    proc = older.start_cli('request')
    try:
        wait_until(lambda: clientid in responder.secondaries.snapshot()
                   and not responder.compact_live(), 30, 'the older requester seen')
        stamps = [LAST + k * STEP for k in range(1, 13)]          # across midnight
        for message in live(rig, broker, responder, primary, stamps):
            assert 'encoding' not in user_properties(message)
        wait_until(lambda: newest(older) == stamps[-1], 30, 'the live records, older',
                   describe=proc.describe)
        wait_until(lambda: node.replica.position == stamps[-1], 15, 'the live records')
    finally:
        proc.stop()
    assert 'ERROR' not in proc.log_text()
    assert_same(primary, older)
    assert_same(primary, secondary)


def newest(station):
    with station.open_manager(BINDING) as manager:
        return manager.lastGoodStamp()
