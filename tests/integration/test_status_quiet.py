"""Quiet statuses and the status file (docs/seeing.md): one status per role per archive
interval in steady state, at once on what a reader needs; the file both roles write."""

import time

import pytest


pytestmark = pytest.mark.integration


def count_statuses(client, seconds):
    counts = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            message = client.get(0.1)
        except TimeoutError:
            continue
        if not message.retain:
            counts[message.topic] = counts.get(message.topic, 0) + 1
    return counts


def test_quiet_when_nothing_happens(rig, broker):
    primary = rig.primary(broker, count=100)
    secondary = rig.secondary(broker)
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    time.sleep(8)                      # the statuses after the catch-up settle
    client = rig.client(broker)
    client.subscribe('replicate/status/#')
    assert count_statuses(client, 6) == {}


def test_debug(rig, broker, caplog):
    primary = rig.primary(broker, count=100)
    secondary = rig.secondary(broker)
    rig.start_responder(primary)
    client = rig.client(broker)
    client.subscribe('replicate/status/#')
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    print(count_statuses(client, 10))
    print([r.getMessage() for r in caplog.records if r.levelno >= 30])
    assert 0
