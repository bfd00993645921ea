"""Bytes on the broker per archive interval, live, between two real weewxd.

    .venv/bin/python bench/wire.py [--intervals 6] [--archive-interval 60]

A private Mosquitto; a primary weewxd running weewx's Simulator in real time (stock
`loop_hilo`, so its daily summaries hold LOOP highs and lows) with the responder; a
secondary weewxd with the requester as its driver. Once the secondary has caught up with
the seeded history, a subscriber to `#` counts every message's payload, topic and encoded
properties by kind for `--intervals` archive intervals: the primary's live records and
statuses, the secondary's acknowledgements and statuses.

It prints the figures per archive interval and per day of 5-minute records (288
intervals), beside the floor of the record itself: the same records as compact JSON, what
the earlier extension sent. The run ends with both stations stopped and their databases
compared row by row, archive and every daily summary.
"""

import argparse
import collections
import json
import time

import _common as c
from status_bytes import message_bytes

from tests.support.mqtt import MqttClient, user_properties
from tests.support.station import STARTED, compare_databases

CAUGHT_UP = r'driver: weewx/wx_binding caught up at'


def kind_of(message):
    """(side, kind) of a message: the primary's or the secondary's, and what it is."""
    topic = message.topic
    if topic.startswith('replicate/archive/'):
        return 'primary', 'live record'
    if topic.startswith('replicate/status/'):
        return ('secondary' if topic.count('/') > 2 else 'primary'), 'status'
    if topic.startswith('replicate/request/'):
        op = user_properties(message).get('op')
        return 'secondary', 'ack' if op == 'ack' else 'request'
    if topic.startswith('replicate/response/'):
        return 'primary', 'catch-up answer'
    return 'other', topic.split('/')[0]


def configure(primary, secondary, broker, args):
    c.add_stanza(primary, broker, 'Responder')
    c.add_stanza(secondary, broker, 'Requester', archive_interval=args.archive_interval)

    def common(config):
        config['StdArchive']['archive_interval'] = str(args.archive_interval)
        config['StdArchive']['loop_hilo'] = 'True'
        config['Replicator']['status_heartbeat'] = str(args.heartbeat)
        config['StdReport']['enable'] = 'false'

    def pri(config):
        common(config)
        config['Station']['station_type'] = 'Simulator'
        config['Simulator'] = {'driver': 'weewx.drivers.simulator', 'mode': 'simulator',
                               'loop_interval': str(args.loop_interval)}
        config['StdArchive']['record_generation'] = 'software'
        config['Engine']['Services']['restful_services'] = ['user.mqttreplicate.MQTTResponder']
    primary.edit(pri)
    secondary.edit(common)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--intervals', type=int, default=6, help='archive intervals counted')
    parser.add_argument('--archive-interval', type=int, default=60)
    parser.add_argument('--loop-interval', type=float, default=2.5)
    parser.add_argument('--heartbeat', type=int, default=10,
                        help='status_heartbeat of both stations (the default: 10)')
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    parser.add_argument('--verbose', action='store_true',
                        help="print the last live record's user properties")
    args = parser.parse_args()
    print('machine:', c.machine())
    root = c.workdir('wire')
    broker, primary, secondary = c.make_pair(root, 288 * 3)
    configure(primary, secondary, broker, args)
    counts = collections.defaultdict(lambda: [0, 0])     # (side, kind) -> [messages, bytes]
    floor = [0, 0]                                       # records, bytes of compact JSON
    parts = collections.Counter()                        # a live record's bytes by part
    last_live = []
    pri = primary.start_weewxd()
    sec = None
    try:
        pri.wait_for_log(STARTED, timeout=120)
        sec = secondary.start_weewxd()
        sec.wait_for_log(CAUGHT_UP, timeout=300)
        client = MqttClient(broker)
        client.subscribe('#')
        time.sleep(2)
        client.drain()
        end = time.monotonic() + args.intervals * args.archive_interval
        while time.monotonic() < end:
            try:
                message = client.get(max(end - time.monotonic(), 0.01))
            except TimeoutError:
                continue
            if message.retain and message.topic.startswith('homeassistant/'):
                continue
            kind = kind_of(message)
            entry = counts[kind]
            entry[0] += 1
            entry[1] += message_bytes(message)
            if kind == ('primary', 'live record'):
                parts['largest'] = max(parts['largest'], message_bytes(message))
                parts['payload'] += len(message.payload)
                for name, value in getattr(message.properties, 'UserProperty', None) or []:
                    parts[name] += len(name) + len(value) + 5
                last_live[:] = [message]
        client.disconnect()
        floor[:] = record_floor(primary, args.intervals)
        last = newest(primary)
        wait_for(lambda: newest(secondary) == last, 30)
    finally:
        pri.stop()
        if sec is not None:
            sec.stop()
    diffs = compare_databases(primary, 'wx_binding', secondary, 'wx_binding')
    c.tear_down(root, broker, [primary, secondary], args.keep)
    report(counts, floor, args)
    live = counts.get(('primary', 'live record'), (0, 0))[0]
    if live:
        largest = parts.pop('largest')
        print('a live record, by part (bytes): ' + ', '.join(
            '%s %.0f' % (name, size / live) for name, size in parts.most_common())
            + '; the largest message %d bytes' % largest)
    if args.verbose and last_live:
        print('the last live record\'s user properties:',
              getattr(last_live[0].properties, 'UserProperty', None))
    print('archive and daily summaries equal row by row: %s'
          % ('yes' if not diffs else 'NO\n  ' + '\n  '.join(diffs[:10])))
    if diffs:
        raise SystemExit(1)


def record_floor(station, n):
    """(records, bytes): the newest n records of the primary as compact JSON without NULLs,
    the earlier extension's live message (payload alone)."""
    import weecfg
    import weewx.manager
    _, config = weecfg.read_config(str(station.config_path))
    with weewx.manager.open_manager_with_config(config, 'wx_binding') as manager:
        rows = list(manager.genSql('SELECT * FROM archive ORDER BY dateTime DESC LIMIT ?',
                                   (n,)))
        names = manager.sqlkeys
    size = sum(len(json.dumps({k: v for k, v in zip(names, row) if v is not None},
                              separators=(',', ':'))) for row in rows)
    return len(rows), size


def newest(station):
    """The station's newest record (dateTime)."""
    import weecfg
    import weewx.manager
    _, config = weecfg.read_config(str(station.config_path))
    with weewx.manager.open_manager_with_config(config, 'wx_binding') as manager:
        return manager.lastGoodStamp()


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.5)


def report(counts, floor, args):
    n = args.intervals
    day = 86400 // 300
    print('%d archive intervals of %d s, status_heartbeat %d; per archive interval, and per '
          'day of 5-minute records:' % (n, args.archive_interval, args.heartbeat))
    totals = collections.Counter()
    for (side, kind), (messages, size) in sorted(counts.items()):
        totals[side] += size
        print('  %-9s %-16s %5.2f messages %7.0f bytes %9.0f bytes/day'
              % (side, kind, messages / n, size / n, size / n * day))
    for side in ('primary', 'secondary'):
        print('  %-9s %-16s %22.0f bytes %9.0f bytes/day'
              % (side, 'all', totals[side] / n, totals[side] / n * day))
    live = counts.get(('primary', 'live record'), (0, 0))
    if floor[0] and live[0]:
        per = floor[1] / floor[0]
        print('live record %.0f bytes, floor (the record as compact JSON, no summaries) %.0f '
              'bytes: %.2fx; target: the primary <= 1024 bytes per interval: %s'
              % (live[1] / live[0], per, live[1] / live[0] / per,
                 'met' if totals['primary'] / n <= 1024 else 'MISSED'))


if __name__ == '__main__':
    main()
