"""Home Assistant MQTT discovery (homeassistant.py, docs/seeing.md): every discovery payload a
run publishes is checked against Home Assistant's documented rules, and every value_template
is rendered with Jinja2, as Home Assistant renders it, against the run's real statuses."""

import datetime
import json
import re
import time

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests.integration.harness import KEY, START, STEP, add_to_primary, new_record, \
    read_for_live, wait_until
from user.mqttreplicate import homeassistant

pytestmark = pytest.mark.integration

ID = re.compile(r'^[a-zA-Z0-9_-]+$')
DISCOVERY = re.compile(r'^homeassistant/device/([a-zA-Z0-9_-]+)/config$')
# the sensor device classes used here, and the units Home Assistant accepts for them
UNITS = {'duration': {'d', 'h', 'min', 's', 'ms'}, 'timestamp': {None}}
SENSOR_KEYS = {'platform', 'unique_id', 'name', 'default_entity_id', 'state_topic',
               'value_template', 'availability', 'expire_after', 'device_class',
               'unit_of_measurement', 'state_class', 'entity_category'}


def timestamp_custom(value, fmt, local=True):
    """Home Assistant's filter: a UNIX timestamp formatted (in UTC unless local)."""
    zone = None if local else datetime.timezone.utc
    return datetime.datetime.fromtimestamp(float(value), zone).strftime(fmt)


def environment():
    env = ImmutableSandboxedEnvironment()
    env.filters['timestamp_custom'] = timestamp_custom
    return env


def render(env, template, payload):
    """What Home Assistant's MQTT sensor renders for a state message's payload."""
    try:
        value_json = json.loads(payload)
    except ValueError:
        value_json = None
    return env.from_string(template).render(value_json=value_json, value=payload).strip()


def check_discovery(topic, config):
    """Home Assistant's rules for a device-based discovery payload; the components."""
    match = DISCOVERY.match(topic)
    assert match, topic
    device, origin = config['device'], config['origin']
    assert device['identifiers'] and device['name'] and device['sw_version']
    assert device['model'] == 'MQTTReplicate'
    assert origin['name'] and origin['sw_version'] and origin['support_url'].startswith('https')
    components = config['components']
    assert components
    for cid, component in components.items():
        assert ID.match(cid), cid
        assert component['platform'] == 'sensor'
        assert set(component) <= SENSOR_KEYS, set(component) - SENSOR_KEYS
        assert 'object_id' not in component                  # deprecated
        assert ID.match(component['unique_id']) and component['unique_id'] == cid
        assert re.match(r'^sensor\.[a-z0-9_]+$', component['default_entity_id'])
        assert '+' not in component['state_topic'] and '#' not in component['state_topic']
        device_class = component.get('device_class')
        if device_class is not None:
            assert component.get('unit_of_measurement') in UNITS[device_class], component
        if component.get('entity_category') is not None:
            assert component['entity_category'] in ('diagnostic', 'config')
        assert isinstance(component['expire_after'], int) and component['expire_after'] > 0
        for availability in component['availability']:
            assert availability['payload_available'] == 'online'
            assert availability['payload_not_available'] == 'offline'
    return components


def check_rendered(component, text):
    """A rendered value as Home Assistant reads it for the sensor's device class."""
    if text == 'None':
        return None                       # Home Assistant: unknown
    if component.get('device_class') == 'timestamp':
        when = datetime.datetime.fromisoformat(text)
        assert when.tzinfo is not None and when.utcoffset() is not None, text
        return when
    if component.get('device_class') == 'duration':
        return float(text)
    return text


def enable(station, on=True):
    def edit(config):
        config['Replicator']['HomeAssistant'] = {'enable': 'true' if on else 'false'}
    station.edit(edit)
    return station


class Seen:
    """The newest message of every topic a test client received."""

    def __init__(self, client):
        self.client = client
        self.last = {}
        self.counts = {}

    def pull(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                message = self.client.get(0.1)
            except TimeoutError:
                continue
            self.last[message.topic] = message.payload
            self.counts[message.topic] = self.counts.get(message.topic, 0) + 1

    def discovery(self):
        return {t: json.loads(p) for t, p in self.last.items()
                if t.startswith('homeassistant/device/') and p}


def test_discovery_checked_and_templates_rendered(rig, broker):
    primary = enable(rig.primary(broker, count=100))
    secondary = enable(rig.secondary(broker, clientid='web-1'))
    client = rig.client(broker)
    client.subscribe('homeassistant/#')
    client.subscribe('replicate/status/#')
    seen = Seen(client)
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    ts = START + 99 * STEP
    for _ in range(2):
        ts += STEP
        add_to_primary(primary, [new_record(ts)])
        responder.publish_live(responder.bindings[KEY], *read_for_live(primary, ts))
    seen.pull(2)

    def both_published():
        seen.pull(1)
        found = seen.discovery()
        sensors = [c for config in found.values() for c in config['components']]
        return found if len(found) == 2 and any('web-1' in c and c.endswith('_lag')
                                                 for c in sensors) else None
    found = wait_until(both_published, 20, 'both stations\' discovery, the secondary on the '
                                           'primary')
    seen.pull(12)                         # the statuses after the last record
    assert set(found) == {homeassistant.discovery_topic(
        'homeassistant', homeassistant.station_id(s.config_dict())) for s in (primary, secondary)}
    env = environment()
    values = {}
    for topic, config in found.items():
        for cid, component in check_discovery(topic, config).items():
            payload = seen.last[component['state_topic']]
            values[cid] = check_rendered(component, render(env, component['value_template'],
                                                             payload))
            for availability in component['availability']:
                assert render(env, availability['value_template'],
                              seen.last[availability['topic']]) == 'online'
            # an offline status (the will) renders as unknown, without an error
            offline = json.dumps({'state': 'offline', 'role': 'requester'})
            assert render(env, component['value_template'], offline) == 'None'
    newest = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    by_suffix = {}
    for cid, value in values.items():
        by_suffix.setdefault(cid.rsplit('_', 1)[-1], []).append((cid, value))
    lags = dict(by_suffix['lag'])
    assert len(lags) == 2 and set(lags.values()) == {0.0}, lags    # both sides: caught up
    assert any('web-1' in cid for cid in lags)                      # the secondary, on the primary
    # (test stations publish a status after every record: TEST_HEARTBEAT)
    assert {v for _, v in by_suffix['newest']} == {newest}
    assert {v for _, v in by_suffix['acknowledged']} == {newest}
    assert [v for _, v in by_suffix['verified']][0] is not None
    assert [v for _, v in by_suffix['state']] == ['live']

    # Home Assistant restarts: it says online, the discovery comes again
    before = dict(seen.counts)
    client.publish('homeassistant/status', b'online')
    wait_until(lambda: seen.pull(0.5) or all(seen.counts.get(t, 0) > before.get(t, 0)
                                              for t in found), 10, 'the discovery again')

    # turned off at the next start: the secondary's entities removed
    node.stop()
    enable(secondary, on=False)
    mine = homeassistant.discovery_topic('homeassistant',
                                         homeassistant.station_id(secondary.config_dict()))
    rig.start_requester(secondary)
    wait_until(lambda: seen.pull(0.5) or seen.last.get(mine) == b'', 10, 'the removal')
    with rig.client(broker) as fresh:
        fresh.subscribe(mine)
        with pytest.raises(TimeoutError):
            fresh.expect(mine, timeout=1)                           # no retained config left


def test_off_by_default(rig, broker):
    primary = rig.primary(broker, count=10)
    responder = rig.start_responder(primary)
    assert not responder.options.homeassistant.enable
    assert responder.options.homeassistant.discovery_prefix == 'homeassistant'
    client = rig.client(broker)
    client.subscribe('homeassistant/#')
    with pytest.raises(TimeoutError):
        client.expect('homeassistant/#', timeout=3)


def retained(rig, broker, topic):
    """The retained message on topic, or None."""
    with rig.client(broker) as fresh:
        fresh.subscribe(topic)
        try:
            return fresh.expect(topic, timeout=1.5).payload
        except TimeoutError:
            return None


def test_remove_command_before_uninstall(rig, broker):
    """`homeassistant --remove` (docs/install.md, before `weectl extension uninstall`, which
    runs no code of the extension): the station's retained discovery config is gone from the
    broker, the marker file too; a broker that cannot be reached is one line and exit 3."""
    primary = enable(rig.primary(broker, count=10))
    responder = rig.start_responder(primary)
    topic = homeassistant.discovery_topic('homeassistant',
                                          homeassistant.station_id(primary.config_dict()))
    wait_until(lambda: retained(rig, broker, topic), 15, 'the discovery config')
    marker = primary.root / 'archive' / homeassistant.MARKER
    assert marker.exists()
    rig.stop_responder(responder)
    assert retained(rig, broker, topic)                 # stopping leaves the entities
    result = primary.run_cli('--connect-timeout', '10', 'homeassistant', '--remove',
                             timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'Home Assistant entities removed' in result.stdout
    assert retained(rig, broker, topic) is None
    assert not marker.exists()

    def elsewhere(config):
        config['Replicator']['port'] = '1'
        for role in ('Requester', 'Responder'):
            if role in config['Replicator']:
                config['Replicator'][role].pop('port', None)
    primary.edit(elsewhere)
    result = primary.run_cli('--connect-timeout', '2', 'homeassistant', '--remove',
                             timeout=60)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert len([line for line in result.stderr.splitlines() if 'error' in line]) == 1
