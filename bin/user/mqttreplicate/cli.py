"""The command line: run either role standalone, and look at the replication status.

    python3 -m user.mqttreplicate [--config FILE] respond [--watch]
    python3 -m user.mqttreplicate [--config FILE] request [--once]
    python3 -m user.mqttreplicate [--config FILE] status [--json]
    python3 -m user.mqttreplicate [--config FILE] check [--warn N] [--crit N]
    python3 -m user.mqttreplicate [--config FILE] verify [--days N | --all] [--repair]
    python3 -m user.mqttreplicate [--config FILE] homeassistant --remove
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from . import VERSION
from . import config as cfg
from . import database
from . import monitor
from . import statusfile

log = logging.getLogger(__name__)

EXIT_OK, EXIT_DIFFERENT, EXIT_USAGE, EXIT_BROKER, EXIT_NO_ANSWER = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Exit 2 with this sentence."""


class BrokerError(Exception):
    """Exit 3 with this sentence."""


class NoAnswerError(Exception):
    """Exit 4 with this sentence: the broker was reached, the responder did not answer."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python3 -m user.mqttreplicate',
        description='Replicate WeeWX databases over MQTT v5: run the responder or the '
                    'requester standalone, or show the replication status.')
    parser.add_argument('--version', action='version', version='MQTTReplicate ' + VERSION)
    parser.add_argument('--config', metavar='FILE',
                        help='the station configuration (default: ./weewx.conf, then '
                             '~/weewx-data/weewx.conf)')
    parser.add_argument('--connect-timeout', type=float, default=15.0, metavar='SECONDS',
                        help='how long to wait for the broker (default 15)')
    parser.add_argument('--status-file', metavar='FILE',
                        help="the station's status file, written by respond and request, read "
                             'by status --json and check (default: mqttreplicate-status.json '
                             "beside the station's SQLite databases)")
    parser.add_argument('-v', '--verbose', action='store_true', help='log debug messages')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    respond = commands.add_parser('respond', help='serve catch-up requests from the database')
    respond.add_argument('--watch', action='store_true',
                         help='also publish new records found in the database')
    respond.add_argument('--watch-interval', type=float, default=10.0, metavar='SECONDS')
    request = commands.add_parser('request', help='catch up every binding and keep up')
    request.add_argument('--once', action='store_true', help='exit 0 once caught up')
    status = commands.add_parser('status', help='show instances, bindings, nodes and lags')
    status.add_argument('--json', action='store_true',
                        help="print the station's status file (both roles, every binding, "
                             'every secondary) as JSON')
    check = commands.add_parser('check', help='one line and exit 0 OK, 1 WARNING, 2 CRITICAL, '
                                '3 UNKNOWN, for cron, monit, Nagios and Icinga')
    check.add_argument('--warn', type=int, default=monitor.DEFAULT_WARN, metavar='N',
                       help='WARNING at N archive intervals of lag (default %(default)s)')
    check.add_argument('--crit', type=int, default=monitor.DEFAULT_CRIT, metavar='N',
                       help='CRITICAL at N archive intervals of lag (default %(default)s)')
    verify = commands.add_parser('verify', help='compare with the primary day by day; exit 0 '
                                 'if in sync, 1 if not')
    span = verify.add_mutually_exclusive_group()
    span.add_argument('--days', type=int, metavar='N',
                      help='the last N days (default: verify_days)')
    span.add_argument('--all', action='store_true', help='every record')
    verify.add_argument('--repair', action='store_true',
                        help='re-fetch the days that differ and replace them here')
    ha = commands.add_parser('homeassistant', help="remove this station's Home Assistant "
                             'entities (before uninstalling the extension)')
    ha.add_argument('--remove', action='store_true', required=True,
                    help='publish an empty retained discovery config on the broker of each '
                         'role')
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return args


def read_config(path):
    import weecfg
    if path is None:
        for candidate in ('weewx.conf', os.path.expanduser('~/weewx-data/weewx.conf')):
            if os.path.exists(candidate):
                path = candidate
                break
        else:
            raise UsageError('no configuration file found; give one with --config')
    if not os.path.exists(path):
        raise UsageError('configuration file %s does not exist' % path)
    try:
        _, config_dict = weecfg.read_config(os.path.abspath(path))
    except Exception as e:
        raise UsageError('cannot read %s: %s' % (path, e))
    return config_dict


def setup_logging(verbose):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    if not verbose:
        logging.getLogger('user.mqttreplicate.transport').setLevel(logging.WARNING)


def wait_connected(transport, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if transport.connected.wait(0.2):
            return
        if transport.refused:
            break
    if transport.refused:
        raise BrokerError(transport.connect_error)
    raise BrokerError('cannot reach the broker at %s:%d within %.0f s%s'
                      % (transport.options.host, transport.options.port, timeout,
                         ' (%s)' % transport.connect_error if transport.connect_error else ''))


def wait_for_signal(stop_event):
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_event.set())


# --- commands --------------------------------------------------------------------------------

def cmd_respond(args, config_dict):
    from .responder import Responder
    try:
        options = cfg.parse_responder(config_dict)
        responder = Responder(options, config_dict, args.status_file)
    except LookupError as e:
        raise UsageError(str(e))
    stop = threading.Event()
    wait_for_signal(stop)
    responder.start()
    try:
        wait_connected(responder.transport, args.connect_timeout)
        print('responding for %s; Ctrl-C to stop' % ', '.join(sorted(responder.bindings)),
              flush=True)
        if args.watch:
            watch(responder, options, stop, args.watch_interval)
        else:
            stop.wait()
    finally:
        responder.stop()
    return EXIT_OK


def watch(responder, options, stop, interval):
    """Publish records that appear in the database (a primary without the service)."""
    sources = {b.key: database.SourceDatabase(responder.manager_dicts[b.key])
               for b in options.bindings}
    try:
        newest = {key: source.newest() or 0 for key, source in sources.items()}
        while not stop.wait(interval):
            for binding in options.ordered_bindings():
                source = sources[binding.key]
                for record in source.read_page(newest[binding.key], None, 1000):
                    ts = record['dateTime']
                    responder.publish_live(binding, record, source.previous(ts),
                                           source.live_days(ts))
                    newest[binding.key] = record['dateTime']
    finally:
        for source in sources.values():
            source.close()


class Progress:
    """Prints records, rate and ETA about once a second."""

    def __init__(self, requester, stream=sys.stdout):
        self.requester = requester
        self.stream = stream
        self.started = time.monotonic()
        self.last_print = 0.0

    def total(self):
        return self.requester.progress_count

    def show(self, final=False):
        now = time.monotonic()
        if not final and now - self.last_print < 1.0:
            return
        self.last_print = now
        elapsed = max(now - self.started, 1e-6)
        count = self.total()
        rate = count / elapsed
        eta = ''
        behind = [(r.primary_newest - r.position, r) for r in self.requester.replicas.values()
                  if r.primary_newest and r.primary_newest > r.position]
        if behind and rate > 0:
            seconds_of_data = sum(b for b, _ in behind)
            interval = self.requester.options.archive_interval
            eta = ', ETA %.0f s' % (seconds_of_data / interval / rate)
        print('records %d, %.0f records/s%s' % (count, rate, eta), file=self.stream,
              flush=True)


def cmd_request(args, config_dict):
    from .requester import Requester, Writer
    try:
        options = cfg.parse_requester(config_dict)
        requester = Requester(options, config_dict, args.status_file)
        writer = Writer(requester)
        for binding in options.ordered_bindings():
            # the main binding as weewxd would fill it: in [StdConvert]'s unit system
            writer.add(binding, config_dict,
                       database.engine_units(config_dict) if binding.is_main else None)
    except LookupError as e:
        raise UsageError(str(e))
    stop = threading.Event()
    wait_for_signal(stop)
    progress = Progress(requester)
    writer.start()
    requester.start()
    try:
        wait_connected(requester.transport, args.connect_timeout)
        while not stop.wait(0.2):
            if not writer.is_alive():
                raise RuntimeError('the writer stopped: %s' % writer.failed)
            requester.transport.revive()
            progress.show()
            if args.once and all(r.caught_up.is_set() for r in requester.replicas.values()):
                break
            refused = ['%s (%s)' % (r.key, r.refused) for r in requester.replicas.values()
                       if r.refused]
            if args.once and refused:
                raise UsageError('the responder refused %s' % ', '.join(refused))
            silent = [r for r in requester.replicas.values() if r.unanswered]
            if args.once and silent:
                raise NoAnswerError('no responder answered for %s: %s' % (
                    ', '.join(r.key for r in silent),
                    requester.silence(silent[0].binding.instance)))
    finally:
        requester.stop()
        writer.stop()
    elapsed = time.monotonic() - progress.started
    count = progress.total()
    print('replicated %d records in %.1f s (%.0f records/s)'
          % (count, elapsed, count / elapsed if elapsed > 0 else 0), flush=True)
    print('messages received %d (%.4f per record), rejected %d'
          % (requester.received, requester.received / count if count else 0,
             requester.rejected), flush=True)
    return EXIT_OK


def status_file_path(args, config_dict):
    return args.status_file or statusfile.status_path(config_dict)


def cmd_status_json(args, config_dict):
    """Print the station's status file (docs/seeing.md), as the roles wrote it."""
    path = status_file_path(args, config_dict)
    data = statusfile.read(path)
    if data is None:
        raise BrokerError('no status file at %s: is weewxd (or respond / request) running '
                          'on this station?' % path)
    data['age'] = max(int(time.time()) - (data.get('written') or 0), 0)
    print(json.dumps(data, indent=2, sort_keys=True))
    return EXIT_OK


def cmd_check(args, config_dict):
    """A monitoring plugin: one line, exit 0/1/2/3 (monitor.judge)."""
    if args.warn < 1 or args.crit < args.warn:
        raise UsageError('--warn must be at least 1 and --crit at least --warn')
    path = status_file_path(args, config_dict)
    code, line = monitor.judge(statusfile.read(path), args.warn, args.crit, path=path)
    print(line, flush=True)
    return code


def command_transport(conn, suffix, topics=(), on_message=None):
    """A started transport for a command: its own client id (conn's + suffix), no session
    kept on the broker."""
    import dataclasses
    from .transport import Transport
    conn = dataclasses.replace(conn, clientid=conn.clientid + suffix,
                               session_expiry_interval=0)
    transport = Transport(conn, list(topics), on_message or (lambda message: None),
                          name=suffix.lstrip('-'))
    transport.start()
    return transport


def read_statuses(conn, connect_timeout):
    """{topic: status} of every retained status under the status prefix."""
    statuses = {}

    def on_message(message):
        try:
            statuses[message.topic] = json.loads(message.payload.decode('utf-8'))
        except ValueError:
            pass

    transport = command_transport(conn, '-status', [conn.status_topic + '/#'], on_message)
    try:
        wait_connected(transport, connect_timeout)
        time.sleep(1.5)
    finally:
        transport.stop()
    return statuses


def responder_state(statuses, conn, instance):
    """The state in the responder's status of an instance ('online', 'offline'), or None."""
    from .protocol import status_topic
    status = statuses.get(status_topic(conn.status_topic, instance))
    return status.get('state') if isinstance(status, dict) else None


def cmd_status(args, config_dict):
    if args.json:
        return cmd_status_json(args, config_dict)
    from .status import why_no_answer
    role = 'Requester' if cfg.has_role(config_dict, 'Requester') else 'Responder'
    options = (cfg.parse_requester if role == 'Requester' else cfg.parse_responder)(config_dict)
    conn = options.connection
    statuses = read_statuses(conn, args.connect_timeout)
    print_status(statuses, conn.status_topic)
    if role == 'Requester':
        for instance in options.instances:
            state = responder_state(statuses, conn, instance)
            if state != 'online':
                print('%s: %s' % (instance, why_no_answer(conn, instance, state)))
    return EXIT_OK


def cmd_homeassistant(args, config_dict):
    """Remove the station's Home Assistant entities from the broker of each role."""
    from . import homeassistant
    connections = {}
    if cfg.has_role(config_dict, 'Requester'):
        conn = cfg.parse_requester(config_dict).connection
        connections[(conn.host, conn.port)] = conn
    if cfg.has_role(config_dict, 'Responder'):
        conn = cfg.parse_responder(config_dict).connection
        connections.setdefault((conn.host, conn.port), conn)
    if not connections:
        raise UsageError('weewx.conf has no [[Requester]] or [[Responder]]: no broker known')
    status_dir = os.path.dirname(status_file_path(args, config_dict))
    topics = homeassistant.removal_topics(config_dict, status_dir)
    for conn in connections.values():
        transport = command_transport(conn, '-ha')
        try:
            wait_connected(transport, args.connect_timeout)
            homeassistant.remove_entities(transport, topics, args.connect_timeout)
        except TimeoutError as e:
            raise BrokerError(str(e))
        finally:
            transport.stop()
        print('Home Assistant entities removed on %s:%d (%s)'
              % (conn.host, conn.port, ', '.join(topics)))
    homeassistant.forget_marker(status_dir)    # (once every broker confirmed)
    return EXIT_OK


def serves_itself(config_dict):
    """The instance this station's own responder serves to its [[Requester]] on the same
    broker and topics, or the first it serves if it has no [[Requester]] (either way the
    station is that instance's primary), or None."""
    if not cfg.has_role(config_dict, 'Responder'):
        return None
    responder = cfg.parse_responder(config_dict)
    if not responder.enable or not responder.instances:
        return None
    if not cfg.has_role(config_dict, 'Requester'):
        return responder.instances[0]
    options = cfg.parse_requester(config_dict)
    ours, theirs = responder.connection, options.connection
    if (ours.host, ours.port, ours.request_topic) != (theirs.host, theirs.port,
                                                      theirs.request_topic):
        return None
    shared = set(responder.instances) & set(options.instances)
    return min(shared) if shared else None


def cmd_verify(args, config_dict):
    from .verify import NoAnswer, Verifier, VerifyError
    from .status import why_no_answer
    own = serves_itself(config_dict)
    if own is not None:
        raise UsageError("this station is the primary of instance '%s' (its [%s][[Responder]] "
                         "has enable = true): verify compares a secondary with its primary, "
                         "so run it on a secondary" % (own, cfg.stanza_name(config_dict)))
    options = cfg.parse_requester(config_dict)
    if args.days is not None and args.days < 1:
        raise UsageError('--days must be at least 1')
    days = None if args.all else (args.days or options.verify_days or 7)
    verifier = Verifier(options, config_dict, out=lambda text: print(text, flush=True))
    try:
        in_sync = verifier.run(days, args.repair)
    except LookupError as e:
        raise UsageError(str(e))
    except NoAnswer as e:
        conn = options.connection
        seen = responder_state(read_statuses(conn, args.connect_timeout), conn, e.instance)
        raise NoAnswerError('%s: %s' % (e, why_no_answer(conn, e.instance, seen))) from None
    except VerifyError as e:
        raise BrokerError(str(e))
    return EXIT_OK if in_sync else EXIT_DIFFERENT


def _when(ts):
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts)) if ts else '-'


def print_status(statuses, prefix):
    if not statuses:
        print('no status published under %s/#' % prefix)
        return
    rows = [('topic', 'state', 'binding', 'newest', 'node', 'acked', 'lag s', 'verified')]
    for topic in sorted(statuses):
        status = statuses[topic]
        state = status.get('state', '?')
        bindings = status.get('bindings') or {}
        if not bindings:
            rows.append((topic, state, '', '', '', '', '', ''))
        for key, info in sorted(bindings.items()):
            info = info or {}
            # a requester's binding: what the primary has acknowledged, when it last verified
            acked = _when(info['acknowledged']) if info.get('acknowledged') else ''
            verified = _when(info['verified']) if info.get('verified') else ''
            lag = str(info['lag']) if info.get('lag') is not None else ''
            rows.append((topic, state, key, _when(info.get('newest')), '', acked, lag,
                         verified))
        for node, acks in sorted((status.get('nodes') or {}).items()):
            for key, ack in sorted(acks.items()):
                rows.append((topic, state, key, '', node, _when(ack.get('last')),
                             str(ack.get('lag', '')), ''))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print('  '.join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)
    try:
        reads_file = args.command == 'check' or (args.command == 'status' and args.json)
        # (a status file given: no configuration needed to read it)
        config_dict = {} if reads_file and args.status_file and not args.config \
            else read_config(args.config)
        if args.command == 'respond':
            return cmd_respond(args, config_dict)
        if args.command == 'request':
            return cmd_request(args, config_dict)
        if args.command == 'status':
            return cmd_status(args, config_dict)
        if args.command == 'check':
            return cmd_check(args, config_dict)
        if args.command == 'homeassistant':
            return cmd_homeassistant(args, config_dict)
        return cmd_verify(args, config_dict)
    except (UsageError, cfg.ConfigError) as e:
        print('error: %s' % e, file=sys.stderr)
        if args.command == 'check':     # a monitor reads stdout and the exit code
            print('REPLICATION UNKNOWN - %s' % e, flush=True)
            return monitor.UNKNOWN
        return EXIT_USAGE
    except BrokerError as e:
        print('error: %s' % e, file=sys.stderr)
        return EXIT_BROKER
    except NoAnswerError as e:
        print('error: %s' % e, file=sys.stderr)
        return EXIT_NO_ANSWER
    except KeyboardInterrupt:
        return EXIT_OK
