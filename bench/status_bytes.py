"""Bytes of acknowledgements and statuses per archive interval per secondary, live.

    .venv/bin/python bench/status_bytes.py [--records 20] [--every 60] [--secondaries 1]
        [--heartbeat N]

A private Mosquitto, a primary whose responder runs in this process (the service's code
path: insert into the database, then Responder.publish_live with `prev` and the day's
summaries), and secondaries whose requesters run here too (as `request` builds them). Once
every secondary caught up, a record is stored and published every `--every` seconds (one
archive interval of the run); a subscriber to `#` counts each message's payload, topic and
properties by kind (live records, acks, statuses, other). The first two intervals are left
out (settling after the catch-up); the figures are per interval per secondary. The
stations' archive interval is `--every` (at least 60 s, the requester's minimum), so that
the status heartbeat (`status_heartbeat` archive intervals, `--heartbeat`, the extension's
default if not given) falls inside the run: measure at least one heartbeat's worth of
intervals.
"""

import argparse
import collections
import time

import _common as c


def message_bytes(message):
    """Payload + topic + encoded properties of a received message."""
    props = getattr(message, 'properties', None)
    size = len(message.payload) + len(message.topic.encode('utf-8'))
    if props is not None:
        try:
            size += len(props.pack())
        except Exception:
            pass
    return size


def kind_of(message):
    topic = message.topic
    if topic.startswith('replicate/archive/'):
        return 'live'
    if topic.startswith('replicate/status/'):
        return 'status'
    if topic.startswith('replicate/request/'):
        props = dict(getattr(message.properties, 'UserProperty', None) or [])
        return 'ack' if props.get('op') == 'ack' else 'request'
    return 'other'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=20, help='intervals measured')
    parser.add_argument('--every', type=int, default=60,
                        help='seconds between records: the archive interval (at least 60)')
    parser.add_argument('--secondaries', type=int, default=1)
    parser.add_argument('--heartbeat', type=int, default=None,
                        help='status_heartbeat (archive intervals) of every station')
    args = parser.parse_args()
    if args.every < 60:
        parser.error('--every must be at least 60 (the smallest archive interval)')
    print('machine:', c.machine())
    root = c.workdir('status-bytes')
    warmup = 2
    # the seeded day ends where the live records begin, so that these end about now: in
    # today, never in a whole past day (which would change the responder's fingerprint of
    # its recent past at every record and make the secondaries verify)
    start = int(time.time()) - (288 + args.records + warmup + 1) * 300
    start -= start % 300
    broker, primary, secondary = c.make_pair(root, 288, start=start)
    secondaries = [secondary]
    for n in range(1, args.secondaries):
        other = c.make_station(root, 'secondary%d' % n)
        c.add_stanza(other, broker, 'Requester')
        secondaries.append(other)

    def paced(config):
        config['StdArchive']['archive_interval'] = str(args.every)
        if 'Requester' in config['Replicator']:
            config['Replicator']['Requester']['archive_interval'] = str(args.every)
        if args.heartbeat is not None:
            config['Replicator']['status_heartbeat'] = str(args.heartbeat)
    for station in [primary] + secondaries:
        station.edit(paced)

    import weecfg
    import weewx.manager
    from tests.support.mqtt import MqttClient
    from tests.support.station import generate_records
    from user.mqttreplicate import config as cfg, database
    from user.mqttreplicate.requester import Requester, Writer
    from user.mqttreplicate.responder import Responder

    _, config_dict = weecfg.read_config(str(primary.config_path))
    options = cfg.parse_responder(config_dict)
    responder = Responder(options, config_dict)
    responder.start()
    nodes = []
    for station in secondaries:
        _, sconf = weecfg.read_config(str(station.config_path))
        soptions = cfg.parse_requester(sconf)
        requester = Requester(soptions, sconf)
        writer = Writer(requester)
        for binding in soptions.ordered_bindings():
            writer.add(binding, sconf)
        writer.start()
        requester.start()
        nodes.append((requester, writer))
    counts = collections.defaultdict(lambda: [0, 0])     # kind -> [messages, bytes]

    def count_for(seconds, counting):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                message = client.get(max(end - time.monotonic(), 0.01))
            except TimeoutError:
                continue
            if counting and not message.retain:
                entry = counts[kind_of(message)]
                entry[0] += 1
                entry[1] += message_bytes(message)

    client = MqttClient(broker)
    try:
        deadline = time.monotonic() + 120
        while not all(r.caught_up.is_set() for q, _ in nodes for r in q.replicas.values()):
            assert time.monotonic() < deadline, 'no catch-up'
            time.sleep(0.2)
        client.subscribe('#')
        manager = weewx.manager.open_manager_with_config(config_dict, 'wx_binding')
        binding = options.bindings[0]
        first = start + 288 * 300
        for n, record in enumerate(generate_records(first + 300, args.records + warmup, 5,
                                                    'US')):
            manager.addRecord(record, log_success=False)
            ts = record['dateTime']
            prev = database.previous_timestamp(manager, ts)
            responder.publish_live(binding, {k: v for k, v in record.items()
                                             if v is not None}, prev,
                                   database.live_days(manager, ts))
            count_for(args.every, n >= warmup)
        manager.close()
    finally:
        for requester, writer in nodes:
            requester.stop()
            writer.stop()
        responder.stop()
        client.disconnect()
        c.tear_down(root, broker, [primary] + secondaries)
    per = args.records * args.secondaries
    print('%d intervals of %d s, %d secondaries, status_heartbeat %s; per interval per '
          'secondary:' % (args.records, args.every, args.secondaries,
                          args.heartbeat or 'default'))
    for kind in ('live', 'ack', 'status', 'request', 'other'):
        messages, size = counts.get(kind, (0, 0))
        print('  %-8s %6.2f messages %8.0f bytes' % (kind, messages / per, size / per))
    acks, statuses = counts.get('ack', (0, 0)), counts.get('status', (0, 0))
    print('acks + statuses: %.0f bytes per interval per secondary'
          % ((acks[1] + statuses[1]) / per))


if __name__ == '__main__':
    main()
