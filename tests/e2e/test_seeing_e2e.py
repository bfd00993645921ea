"""Seeing replication under weewxd (docs/seeing.md): both stations' status files, `check`
and `status --json` from each station's command line, Home Assistant's discovery."""

import json

import pytest

from tests.e2e.replication import MAIN_KEY
from tests.support.mqtt import MqttClient
from tests.support.waiting import wait_until
from user.mqttreplicate import statusfile

pytestmark = pytest.mark.e2e


def enable_homeassistant(station):
    def edit(config):
        config['Replicator']['HomeAssistant'] = {'enable': 'true'}
    station.edit(edit)


def test_status_files_check_and_discovery_under_weewxd(replication):
    rep = replication()
    rep.seed(days=2)
    enable_homeassistant(rep.primary)
    enable_homeassistant(rep.secondary)
    with MqttClient(rep.broker) as client:
        client.subscribe('homeassistant/device/+/config')
        pri = rep.start_primary()
        rep.wait_primary_grows(2)
        held = rep.hold(pri)               # quiet: what the files say can be compared
        sec = rep.start_secondary()
        position, _ = rep.wait_caught_up(sec)
        assert position == held
        rep.settle()

        def files():
            mine = statusfile.read(statusfile.status_path(rep.secondary.config_dict()))
            theirs = statusfile.read(statusfile.status_path(rep.primary.config_dict()))
            binding = mine and mine['requester'] and mine['requester']['bindings'][MAIN_KEY]
            secondaries = theirs and theirs['responder'] and theirs['responder']['secondaries']
            ok = binding and binding['newest'] == held and binding['state'] == 'live' \
                and secondaries and any(
                    s['state'] == 'live' and s['bindings'][MAIN_KEY]['newest'] == held
                    for s in secondaries.values())
            return (mine, theirs) if ok else None
        mine, theirs = wait_until(files, 30, 'both status files to show the held record')
        assert mine['requester']['primary']['state'] == 'online'
        assert mine['station']['archive_interval'] and mine['station']['timezone']
        assert theirs['responder']['bindings'][MAIN_KEY]['newest'] == held

        # the command line of each station, as installed
        for station in (rep.secondary, rep.primary):
            done = station.run_cli('check')
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.startswith('REPLICATION OK - '), done.stdout
            done = station.run_cli('status', '--json')
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)['format'] == 1

        # one device per station, the secondary on the primary's
        found = {}
        while len(found) < 2 or not any('_lag' in c and 'requester' in c
                                        for config in found.values()
                                        for c in config['components']):
            message = client.expect('homeassistant/device/+/config', timeout=30)
            found[message.topic] = json.loads(message.payload)
    rep.release()
    rep.wait_live(since=held, n=3)
    rep.finish(pri, [sec])
