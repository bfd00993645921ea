"""Home Assistant MQTT discovery of the replication sensors (docs/seeing.md), off by default.

One retained, device-based discovery message per station, at

    <discovery_prefix>/device/<station id>/config

with the station as the device, MQTTReplicate as the origin, and one `sensor` component per
fact: on a secondary, per binding its lag, newest record, last verification, state and
repairs (read from its own retained status); on a primary, per binding its newest record and
per secondary and binding its lag and last acknowledged record (read from the responder's
status). Availability is the status topic of the role, online or offline (its will). The
message is published at each connection, when the components change (a new secondary) and
when Home Assistant says `online` on `<discovery_prefix>/status`; an empty retained message
removes the entities when discovery is turned off (at the next start: a marker file beside
the status file remembers the topic), or by the command `homeassistant --remove` (before the
extension is uninstalled: WeeWX runs no code of an extension when it uninstalls it).

Both roles of a relay run in one weewxd and share one device: Discovery merges their
components under a lock before either publishes.
"""

import json
import logging
import os
import re
import socket
import threading
import time

from . import VERSION
from . import config as cfg
from . import protocol

log = logging.getLogger(__name__)

MODEL = 'MQTTReplicate'
# the origin's support_url: the home of the earlier weewx-mqtt/replicate extension, until
# this one has its own
SUPPORT_URL = 'https://github.com/weewx-mqtt/replicate'
EXPIRE_INTERVALS = 2          # entities expire this many archive intervals after a missed
                              # heartbeat (a steady status comes every status_heartbeat)
MARKER = 'mqttreplicate-homeassistant.json'
ISO = "timestamp_custom('%Y-%m-%dT%H:%M:%S+00:00', false)"

_devices = {}                 # station id -> {role: components}: a relay's two roles
_devices_lock = threading.Lock()


def safe_id(text):
    """text with every character outside [a-zA-Z0-9_-] replaced by '_' (Home Assistant's
    rule for discovery ids)."""
    return re.sub(r'[^a-zA-Z0-9_-]', '_', text)


def station_id(config_dict):
    """This station's id: stable, from the host and the station's directory."""
    host = socket.gethostname().split('.')[0] or 'host'
    return safe_id('mqttreplicate_%s_%s' % (host, cfg.station_tag(config_dict)))


def birth_topic(options, connection):
    """Home Assistant's status topic to subscribe to, or None: discovery off, or messages
    must be signed (shared_secret; Home Assistant's are not, and the retained discovery
    stays on the broker anyway)."""
    if not options.enable or connection.shared_secret:
        return None
    return '%s/status' % options.discovery_prefix


def discovery_topic(prefix, station):
    return '%s/device/%s/config' % (prefix, station)


def _path(*keys):
    """A template expression for value_json[keys[0]][keys[1]]..., None where absent (an
    offline status has none of them)."""
    expr = 'value_json'
    for key in keys[:-1]:
        expr = '(%s.get(%s) or {})' % (expr, json.dumps(key))
    return '%s.get(%s)' % (expr, json.dumps(keys[-1]))


def value(*keys):
    """value_template of a number or text of the status: its value, or None (unknown)."""
    return '{%% set v = %s %%}{{ v if v is not none else None }}' % _path(*keys)


def timestamp(*keys):
    """value_template of a time of the status (epoch seconds): ISO 8601 with its offset."""
    return '{%% set v = %s %%}{{ v | %s if v else None }}' % (_path(*keys), ISO)


class Discovery:
    """The discovery of one role of a station. Call update() every few seconds: it publishes
    when due; removal() at start when discovery is off."""

    def __init__(self, options, role, config_dict, transport, status_dir, interval,
                 heartbeat=1):
        self.options = options                  # config.HomeAssistantOptions
        self.role = role
        self.station = station_id(config_dict)
        station = config_dict.get('Station') or {}
        location = station.get('location')
        if isinstance(location, list):
            location = ', '.join(location)
        self.name = 'Replication %s' % (location or self.station)
        self.transport = transport
        self.topic = discovery_topic(options.discovery_prefix, self.station)
        self.marker = os.path.join(status_dir, MARKER)
        self.expire_after = (heartbeat + EXPIRE_INTERVALS) * (interval or 300)
        self.published = None                   # components last published
        self.connection = None                  # the connection they were published on
        self.again = threading.Event()          # Home Assistant came online

    @property
    def enabled(self):
        return self.options.enable

    def on_birth(self, payload):
        """A message on <prefix>/status: 'online' asks for the discovery again."""
        if payload.strip().lower() == b'online':
            self.again.set()

    def sensor(self, oid, name, state_topic, template, availability, device_class=None,
               unit=None, diagnostic=False, state_class=None):
        """One sensor component (Home Assistant's documented keys)."""
        uid = safe_id('%s_%s' % (self.station, oid))
        component = {'platform': 'sensor', 'unique_id': uid, 'name': name,
                     'default_entity_id': 'sensor.' + uid.lower().replace('-', '_'),
                     'state_topic': state_topic, 'value_template': template,
                     'availability': [{'topic': availability,
                                       'value_template': '{{ value_json.state }}',
                                       'payload_available': 'online',
                                       'payload_not_available': 'offline'}],
                     'expire_after': self.expire_after}
        if device_class:
            component['device_class'] = device_class
        if unit:
            component['unit_of_measurement'] = unit
        if state_class:
            component['state_class'] = state_class
        if diagnostic:
            component['entity_category'] = 'diagnostic'
        return uid, component

    def payload(self, components):
        return {'device': {'identifiers': [self.station], 'name': self.name,
                           'model': MODEL, 'sw_version': VERSION},
                'origin': {'name': MODEL, 'sw_version': VERSION, 'support_url': SUPPORT_URL},
                'components': components, 'qos': 1}

    def update(self, components, connection):
        """Publish the station's device (both roles' components) if ours changed, we
        reconnected, or Home Assistant asked. Never raises."""
        if not self.enabled:
            return False
        again = self.again.is_set()
        if components == self.published and connection == self.connection and not again:
            return False
        try:
            with _devices_lock:
                roles = _devices.setdefault(self.station, {})
                roles[self.role] = components
                merged = {}
                for role in sorted(roles):
                    merged.update(roles[role])
                self.transport.publish(self.topic, protocol.encode_json(self.payload(merged)),
                                       qos=1, retain=True)
            self.again.clear()
            self.published, self.connection = components, connection
            self._mark()
            log.debug('%s: Home Assistant discovery published on %s (%d sensors)',
                      self.role, self.topic, len(merged))
            return True
        except Exception as e:
            log.warning('%s: Home Assistant discovery not published: %s: %s', self.role,
                        type(e).__name__, e)
            return False

    def _mark(self):
        try:
            if not os.path.exists(self.marker):
                os.makedirs(os.path.dirname(self.marker), exist_ok=True)
                with open(self.marker, 'w') as f:
                    json.dump({'topic': self.topic}, f)
        except OSError as e:
            log.debug('marker %s not written: %s', self.marker, e)

    def removal(self):
        """The topic of entities published before, if discovery is now off: publish an empty
        retained message there (remove_done() after). None if there is nothing to remove."""
        if self.enabled or not os.path.exists(self.marker):
            return None
        try:
            with open(self.marker) as f:
                return json.load(f).get('topic') or self.topic
        except (OSError, ValueError):
            return self.topic

    def remove(self):
        """Remove the entities (discovery turned off): an empty retained config. Never
        raises."""
        topic = self.removal()
        if topic is None:
            return False
        try:
            self.transport.publish(topic, b'', qos=1, retain=True)
            os.remove(self.marker)
            log.info('%s: Home Assistant entities removed (%s)', self.role, topic)
            return True
        except Exception as e:
            log.warning('%s: Home Assistant entities not removed: %s: %s', self.role,
                        type(e).__name__, e)
            return False


def removal_topics(config_dict, status_dir):
    """The discovery topics to clear to remove this station's entities for good (before the
    extension is uninstalled): the one of its [[HomeAssistant]] prefix, and the one the
    marker in status_dir remembers (a prefix changed since)."""
    options = cfg.parse_homeassistant(config_dict)
    topics = [discovery_topic(options.discovery_prefix, station_id(config_dict))]
    try:
        with open(os.path.join(status_dir, MARKER)) as f:
            marked = json.load(f).get('topic')
        if isinstance(marked, str) and marked and marked not in topics:
            topics.append(marked)
    except (OSError, ValueError, AttributeError):
        pass
    return topics


def remove_entities(transport, topics, timeout):
    """Publish an empty retained message on each topic through a connected transport and
    wait (at most timeout seconds) for the broker to take each. Raises TimeoutError if the
    broker did not confirm (or the message could not be sent: the connection dropped)."""
    deadline = time.monotonic() + timeout
    for topic in topics:
        try:
            info = transport.publish(topic, b'', qos=1, retain=True)
            info.wait_for_publish(max(deadline - time.monotonic(), 0.1))
            confirmed = info.is_published()
        except (RuntimeError, ValueError) as e:     # paho: not queued, connection lost
            raise TimeoutError('the removal on %s was not sent: %s' % (topic, e))
        if not confirmed:
            raise TimeoutError('the broker did not confirm the removal on %s within %g s'
                               % (topic, timeout))


def forget_marker(status_dir):
    """The entities are removed from every broker: forget where they were."""
    try:
        os.remove(os.path.join(status_dir, MARKER))
    except OSError:
        pass


def requester_components(discovery, requester):
    """A secondary's sensors: per binding its lag, newest record, last verification, state
    and days repaired; per instance the messages rejected."""
    components = {}
    prefix, clientid = requester.conn.status_topic, requester.conn.clientid
    for replica in requester.ordered():
        key, instance = replica.key, replica.binding.instance
        topic = protocol.status_topic(prefix, instance, clientid)
        oid = safe_id(key)
        for suffix, name, template, extra in (
                ('lag', '%s lag', value('bindings', key, 'lag'),
                 dict(device_class='duration', unit='s', state_class='measurement')),
                ('newest', '%s newest record', timestamp('bindings', key, 'newest'),
                 dict(device_class='timestamp')),
                ('verified', '%s last verification', timestamp('bindings', key, 'verified'),
                 dict(device_class='timestamp')),
                ('state', '%s state', value('bindings', key, 'state'), {}),
                ('verify_result', '%s verification', value('bindings', key, 'verify_result'),
                 {}),
                ('repaired', '%s days repaired', value('bindings', key, 'repaired'),
                 dict(diagnostic=True))):
            uid, component = discovery.sensor('%s_%s' % (oid, suffix), name % key, topic,
                                              template, topic, **extra)
            components[uid] = component
    for instance in requester.options.instances:
        topic = protocol.status_topic(prefix, instance, clientid)
        uid, component = discovery.sensor(
            '%s_rejected' % safe_id(instance), '%s messages rejected' % instance, topic,
            value('rejected'), topic, diagnostic=True)
        components[uid] = component
    return components


def responder_components(discovery, responder, secondaries):
    """A primary's sensors: per binding its newest record; per secondary (secondaries: their
    client ids) and binding its lag and last acknowledged record, as components of their
    own; per instance the requests and messages rejected."""
    components = {}
    prefix = responder.conn.status_topic
    for key, binding in sorted(responder.bindings.items()):
        topic = protocol.status_topic(prefix, binding.instance)
        uid, component = discovery.sensor('%s_newest' % safe_id(key), '%s newest record' % key,
                                          topic, timestamp('bindings', key, 'newest'), topic,
                                          device_class='timestamp')
        components[uid] = component
        for clientid in sorted(secondaries):
            oid = '%s_%s' % (safe_id(clientid), safe_id(key))
            for suffix, name, template, extra in (
                    ('lag', '%s %s lag', value('nodes', clientid, key, 'lag'),
                     dict(device_class='duration', unit='s', state_class='measurement')),
                    ('acknowledged', '%s %s last acknowledged',
                     timestamp('nodes', clientid, key, 'last'),
                     dict(device_class='timestamp')),
                    ('stored', '%s %s records stored', value('nodes', clientid, key, 'count'),
                     dict(diagnostic=True))):
                uid, component = discovery.sensor('%s_%s' % (oid, suffix),
                                                  name % (clientid, key), topic, template,
                                                  topic, **extra)
                components[uid] = component
    for instance in responder.options.instances:
        topic = protocol.status_topic(prefix, instance)
        for counter in ('requests', 'rejected'):
            uid, component = discovery.sensor(
                '%s_%s' % (safe_id(instance), counter), '%s %s' % (instance, counter), topic,
                value('counters', counter), topic, diagnostic=True)
            components[uid] = component
    return components
