"""Mutual knowledge (SPEC 2.5, 5.6): once the system is quiet, each side's retained status
shows what the other has.

    wait_mutual_knowledge(broker, primary, [secondary])

waits until, for every binding both replicate and every secondary:

* the responder's status (``{status_topic}/{instance}``) is online, its
  ``bindings[key].newest`` is the newest record of the primary's database, and
  ``nodes[<clientid>][key]`` acknowledges that record with ``lag`` 0;
* the secondary's status (``{status_topic}/{instance}/{clientid}``) is online, not catching
  up, with ``newest == primary_newest == acknowledged`` (that record) and ``lag`` 0, and its
  ``newest`` is the newest record of its own database.

In steady state a role republishes its status only every `status_heartbeat` archive
intervals (docs/protocol.md, quiet statuses): where the heartbeat is more than 1, a newest
record or acknowledgement up to that long before the database's newest is as good, provided
the picture is steady (lag 0 on both sides, the acknowledgement the responder shows is the
newest it shows, the secondary's newest is the primary's newest it knows).

Fails after `timeout` seconds showing every status seen and what is still wrong. Stations
are read for their configuration (topics, client ids, bindings) and databases only: the
roles may run in the test process, as command-line processes or in weewxd.
"""

import json
import time

from tests.support.mqtt import MqttClient

from user.mqttreplicate import config as cfg
from user.mqttreplicate import protocol
from user.mqttreplicate import statusfile


class _Expectation:
    """One binding of one secondary."""

    def __init__(self, station, clientid, key, primary_binding, secondary_binding,
                 responder_topic, requester_topic, slack=0):
        self.station = station
        self.clientid = clientid
        self.key = key
        self.primary_binding = primary_binding
        self.secondary_binding = secondary_binding
        self.responder_topic = responder_topic
        self.requester_topic = requester_topic
        self.slack = slack                 # seconds a steady status may be behind

    def fresh(self, value, newest):
        """value is newest, or (with a heartbeat) a record at most `slack` before it."""
        return value == newest or (
            self.slack > 0 and isinstance(value, int) and isinstance(newest, int)
            and newest - self.slack <= value <= newest)


def expectations(primary, secondaries, responder=None):
    responder = responder or cfg.parse_responder(primary.config_dict())
    served = {b.key: b for b in responder.bindings}
    prefix = responder.connection.status_topic
    out = []
    interval = statusfile.archive_interval(primary.config_dict(), 300)
    for station in secondaries:
        requester = cfg.parse_requester(station.config_dict())
        heartbeat = max(responder.status_heartbeat, requester.status_heartbeat)
        slack = heartbeat * max(interval, requester.archive_interval) if heartbeat > 1 else 0
        clientid = requester.connection.clientid
        for binding in requester.bindings:
            if binding.key not in served:
                continue
            out.append(_Expectation(
                station, clientid, binding.key, served[binding.key].name,
                binding.secondary_data_binding,
                protocol.status_topic(prefix, binding.instance),
                protocol.status_topic(requester.connection.status_topic, binding.instance,
                                      clientid), slack))
    assert out, 'the secondaries replicate no binding the primary serves'
    return out


def _entry(obj, *path):
    for name in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(name)
    return obj


def problems(expected, statuses, primary):
    """What is not (yet) mutual knowledge: [] when everything is."""
    out = []
    newest_here = {}
    for exp in expected:
        if exp.primary_binding not in newest_here:
            newest_here[exp.primary_binding] = primary.last_timestamp(exp.primary_binding)
        newest = newest_here[exp.primary_binding]
        where = '%s %s' % (exp.clientid, exp.key)
        responder = statuses.get(exp.responder_topic)
        requester = statuses.get(exp.requester_topic)
        if _entry(responder, 'state') != 'online':
            out.append('responder status is not online')
        else:
            announced = _entry(responder, 'bindings', exp.key, 'newest')
            if not exp.fresh(announced, newest):
                out.append('responder: bindings[%s].newest is %s, its database has %s'
                           % (exp.key, announced, newest))
            ack = _entry(responder, 'nodes', exp.clientid, exp.key)
            if not isinstance(ack, dict):
                out.append('responder: no ack of %s' % where)
            elif ack.get('last') != announced or ack.get('lag') != 0:
                out.append('responder: %s acknowledged last %s lag %s, not %s lag 0'
                           % (where, ack.get('last'), ack.get('lag'), announced))
        if _entry(requester, 'state') != 'online':
            out.append('requester %s: status is not online' % exp.clientid)
            continue
        mine = _entry(requester, 'bindings', exp.key)
        if not isinstance(mine, dict):
            out.append('requester %s: no binding %s in its status' % (exp.clientid, exp.key))
            continue
        for name in ('newest', 'primary_newest', 'acknowledged'):
            if not exp.fresh(mine.get(name), newest):
                out.append('requester %s: %s is %s, the primary has %s'
                           % (where, name, mine.get(name), newest))
        if mine.get('newest') != mine.get('primary_newest'):
            out.append('requester %s: newest %s is not primary_newest %s'
                       % (where, mine.get('newest'), mine.get('primary_newest')))
        if mine.get('lag') != 0:
            out.append('requester %s: lag is %s' % (where, mine.get('lag')))
        if mine.get('catching_up') is not False:
            out.append('requester %s: catching_up is %s' % (where, mine.get('catching_up')))
        stored = exp.station.last_timestamp(exp.secondary_binding)
        if not exp.fresh(mine.get('newest'), stored):
            out.append('requester %s: newest is %s, its database has %s'
                       % (where, mine.get('newest'), stored))
    return out


def wait_mutual_knowledge(broker, primary, secondaries, timeout=30.0, **client_options):
    """Wait (at most timeout s) until both sides' statuses show mutual knowledge (see the
    module's docstring); return the statuses {topic: object}. client_options go to
    MqttClient (credentials, TLS); by default it logs in as the primary does, if it uses a
    username."""
    responder = cfg.parse_responder(primary.config_dict())
    if 'username' not in client_options and responder.connection.username:
        client_options.update(username=responder.connection.username,
                              password=responder.connection.password)
    expected = expectations(primary, secondaries, responder)
    topics = sorted({e.responder_topic for e in expected}
                    | {e.requester_topic for e in expected})
    statuses = {}
    deadline = time.monotonic() + timeout
    with MqttClient(broker, **client_options) as client:
        for topic in topics:
            client.subscribe(topic)
        while True:
            try:
                message = client.get(0.2)
            except TimeoutError:
                message = None
            if message is not None:
                try:
                    statuses[message.topic] = json.loads(message.payload.decode('utf-8'))
                except ValueError:
                    statuses[message.topic] = message.payload
                continue            # read what is queued before judging
            wrong = problems(expected, statuses, primary)
            if not wrong:
                return statuses
            if time.monotonic() > deadline:
                raise AssertionError(
                    'no mutual knowledge after %.0f s:\n  %s\nstatuses:\n%s' % (
                        timeout, '\n  '.join(dict.fromkeys(wrong)),
                        '\n'.join('%s: %s' % (t, json.dumps(statuses.get(t), sort_keys=True,
                                                            default=repr))
                                  for t in topics)))
