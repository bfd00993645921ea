"""Live latency: from the responder's publication of a record to the record being stored
on a secondary running weewxd.

    .venv/bin/python bench/live_latency.py [--records 40] [--every 1.0]

The responder runs in this process (the code path of the service: insert into the primary's
database, then Responder.publish_live with `prev`); the secondary is a real weewxd with the
requester. Prints p50, p95 and the maximum.
"""

import argparse
import shutil
import sqlite3
import statistics
import time

import _common as c


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=40)
    parser.add_argument('--every', type=float, default=1.0, help='seconds between records')
    args = parser.parse_args()
    print('machine:', c.machine())
    root = c.workdir('live')
    start = int(time.time()) - 2 * 86400
    start -= start % 300
    broker, primary, secondary = c.make_pair(root, 288, start=start)
    secondary.edit(lambda conf: conf['Databases']['archive_sqlite'].update(
        {'pragmas': {'journal_mode': 'WAL'}}))
    weewxd = secondary.start_weewxd()

    import weecfg
    from user.mqttreplicate import config as cfg, database
    from user.mqttreplicate.responder import Responder
    import weewx.manager
    from tests.support.station import generate_records

    _, config_dict = weecfg.read_config(str(primary.config_path))
    options = cfg.parse_responder(config_dict)
    responder = Responder(options, config_dict)
    responder.start()
    binding = options.bindings[0]
    latencies = []
    try:
        weewxd.wait_for_log(r'caught up at', timeout=120)
        responder.transport.wait_connected(10)
        manager = weewx.manager.open_manager_with_config(config_dict, 'wx_binding')
        reader = sqlite3.connect(str(secondary.db_path()))
        first = start + 288 * 300
        for record in generate_records(first + 300, args.records, 5, 'US'):
            manager.addRecord(record, log_success=False)
            prev = database.previous_timestamp(manager, record['dateTime'])
            published = time.monotonic()
            responder.publish_live(binding, {k: v for k, v in record.items()
                                             if v is not None}, prev)
            deadline = published + 30
            while time.monotonic() < deadline:
                row = reader.execute('SELECT 1 FROM archive WHERE dateTime = ?',
                                     (record['dateTime'],)).fetchone()
                if row:
                    latencies.append(time.monotonic() - published)
                    break
                time.sleep(0.005)
            else:
                raise SystemExit('record %s never arrived' % record['dateTime'])
            time.sleep(max(0.0, args.every - (time.monotonic() - published)))
        manager.close()
    finally:
        responder.stop()
        weewxd.stop()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(round(0.95 * len(latencies))) - 1)]
    print('live latency over %d records: p50 %.0f ms, p95 %.0f ms, max %.0f ms'
          % (len(latencies), statistics.median(latencies) * 1000, p95 * 1000,
             latencies[-1] * 1000))


if __name__ == '__main__':
    main()
