"""The Replica as a state machine (replica.py), against a fake Link and an in-memory store:
no broker, no database, no threads. Each test drives the owning thread's calls (handle,
idle) with the typed messages the loop thread would post, and looks at the State, what was
stored or handed to the engine, and what was asked of the broker."""

import queue
import threading

import pytest

from user.mqttreplicate import config as cfg, messages
from user.mqttreplicate import protocol
from user.mqttreplicate import replica as rp
from user.mqttreplicate.replica import Item, Replica, State

KEY = 'weewx/wx_binding'
STEP = 300
T0 = 1700000000 - 1700000000 % STEP


def record(ts, **values):
    return dict({'dateTime': ts, 'usUnits': 1, 'interval': 5, 'outTemp': 60.0}, **values)


def at(n):
    return T0 + n * STEP


# ------------------------------------------------------------------------------------------------
# fakes
# ------------------------------------------------------------------------------------------------

class FakeStore:
    """What a Replica uses of a TargetDatabase, in memory."""

    columns = ('dateTime', 'usUnits', 'interval', 'outTemp')
    has_summaries = False             # (the daily summaries have tests of their own)

    def __init__(self, timestamps=()):
        self.rows = {ts: record(ts) for ts in timestamps}
        self.bulk = []                 # [[dateTime, ...] per store_bulk call]
        self.one = []                  # dateTime of each store_one
        self.finished = 0
        self.rebuilt = []

    def newest(self):
        return max(self.rows, default=0)

    def prepare(self, rec, key):
        assert key == KEY
        return dict(rec)

    def prepare_bulk(self, records, key):
        return protocol.Columns.of([self.prepare(r, key) for r in records])

    def store_bulk(self, columns, day_rows=None):
        records = columns.records()
        self.bulk.append([r['dateTime'] for r in records])
        for r in records:
            self.rows[r['dateTime']] = r
        return len(records)

    def store_one(self, rec):
        self.one.append(rec['dateTime'])
        self.rows[rec['dateTime']] = rec
        return True

    def existing(self, first, last):
        return [ts for ts in self.rows if first <= ts <= last]

    def neighbours(self, ts):
        before = [t for t in self.rows if t < ts]
        after = [t for t in self.rows if t > ts]
        return (max(before) if before else 0), (min(after) if after else None)

    def rebuild_days(self, first, last):
        self.rebuilt.append((first, last))

    def finish_bulk(self):
        self.finished += 1

    def unit_system(self):
        return 1

    def close(self):
        pass


class FakeHost:
    """The Requester as a replica sees it: options, faults, counters, and the Link."""

    def __init__(self, **options):
        binding = cfg.BindingOptions('weewx', 'wx_binding', 'main', 'wx_binding')
        self.options = cfg.RequesterOptions(
            connection=None, bindings=(binding,), page_size=3, page_timeout=60.0,
            startup_max_tries=2, startup_wait_before_retry=10.0, verify_days=0,
            **options)
        self.binding = binding
        self.up = True
        self.requests = []             # (since, until, correlation)
        self.acked = []                # MQTT messages acknowledged
        self.acks = 0                  # replicate acks sent to the responder
        self.counts = {}
        self.stored = 0
        self.stopping = threading.Event()
        self.faults = self.Faults()
        self.serial = 0
        self.online = False            # the responder's status says online

    class Faults:
        def __init__(self):
            self.kinds = []

        def __call__(self, level, kind, message, *args):
            self.kinds.append(kind)

    @property
    def link(self):
        return self

    # the Link
    def connected(self):
        return self.up

    def send_records(self, binding, since, until=None, replace=False, correlation=None,
                     days=None):
        self.serial += 1
        correlation = correlation or b'c%d' % self.serial
        self.requests.append((since, until, correlation))
        return correlation

    def send_digest(self, *args, **kwargs):
        raise AssertionError('no verification in these tests (verify_days = 0)')

    def send_ack(self, replica):
        self.acks += 1

    def ack(self, message):
        self.acked.append(message)

    def silence(self, instance):
        return 'nothing seen of %s' % instance

    def responder_online(self, instance):
        return self.online

    # the host's counters
    def count(self, name, n=1):
        self.counts[name] = self.counts.get(name, 0) + n

    def progress(self, count):
        self.stored += count


class Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def time(self):
        return 1700000000.0


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(rp, 'time', clock)
    return clock


def make(store=None, deliver=None, **options):
    host = FakeHost(**options)
    store = store if store is not None else FakeStore()
    replica = Replica(host, host.binding, queue.Queue(100), lambda: store, deliver=deliver)
    replica.open()
    return replica, host, store


def page(replica, host, records, seq=0, end=True, more=False, correlation=None, newest=None):
    """Post a message of the newest page asked for, as the loop thread does, and handle it."""
    correlation = correlation or host.requests[-1][2]
    last = records[-1]['dateTime'] if records else host.requests[-1][0]
    batch = messages.Batch(KEY, records, seq, end, more and end, last if end else None,
                           newest if end else None)
    assert replica.post_batch(correlation, batch)
    handle_all(replica)


def handle_all(replica):
    while not replica.inbox.empty():
        replica.handle(replica.inbox.get_nowait())


def live(replica, ts, prev, message=None):
    item = Item('live', messages.LiveRecord(KEY, record(ts), prev),
                message=message or object())
    replica.handle(item)
    return item.message


# ------------------------------------------------------------------------------------------------
# the catch-up
# ------------------------------------------------------------------------------------------------

def test_a_new_replica_asks_for_everything_newer_than_its_position(clock):
    replica, host, _ = make(FakeStore([at(0), at(1)]))
    assert replica.state is State.STARTING
    replica.want_catchup()
    handle_all(replica)
    assert replica.state is State.ASKING
    assert [r[:2] for r in host.requests] == [(at(1), None)]


def test_pages_are_stored_in_order_and_the_last_one_ends_the_catchup(clock):
    replica, host, store = make()
    replica.start_catchup()
    first = host.requests[-1][2]
    page(replica, host, [record(at(1)), record(at(2))], seq=0, end=False)
    assert replica.state is State.RECEIVING
    page(replica, host, [record(at(3))], seq=1, end=True, more=True, correlation=first)
    # the next page was asked for from the last record of the first
    assert host.requests[-1][0] == at(3)
    page(replica, host, [record(at(4))], newest=at(4))
    assert replica.state is State.LIVE and replica.caught_up.is_set()
    assert store.bulk == [[at(1), at(2)], [at(3)], [at(4)]]
    assert replica.position == at(4) and replica.stored == 4
    assert replica.primary_newest == at(4)
    assert host.acks == 1              # forced at the end of the catch-up
    assert host.stored == 4


def test_a_page_is_stored_in_seq_order_whatever_order_its_messages_come_in(clock):
    replica, host, store = make()
    replica.start_catchup()
    correlation = host.requests[-1][2]
    page(replica, host, [record(at(3))], seq=1, end=True, correlation=correlation)
    assert store.bulk == [] and replica.state is State.ASKING
    page(replica, host, [record(at(1)), record(at(2))], seq=0, end=False,
         correlation=correlation)
    assert store.bulk == [[at(1), at(2)], [at(3)]]
    assert replica.state is State.LIVE


def test_a_duplicate_message_and_one_of_an_old_request_are_not_stored(clock):
    replica, host, store = make()
    replica.start_catchup()
    old = host.requests[-1][2]
    replica.start_catchup()            # asked again: the first request is forgotten
    page(replica, host, [record(at(1))], seq=0, end=True, more=False, correlation=old)
    assert store.bulk == [] and replica.state is State.ASKING
    current = host.requests[-1][2]
    page(replica, host, [record(at(1))], seq=0, end=False, correlation=current)
    page(replica, host, [record(at(1))], seq=0, end=False, correlation=current)
    assert store.bulk == [[at(1)]]


def test_a_page_end_that_does_not_advance_is_refused_by_the_loop_thread(clock):
    replica, host, _ = make(FakeStore([at(5)]))
    replica.start_catchup()
    batch = messages.Batch(KEY, [], 0, True, True, at(5))      # more=1, last = since
    assert not replica.post_batch(host.requests[-1][2], batch)
    assert replica.inbox.empty()


def test_no_more_than_two_pages_are_outstanding(clock):
    replica, host, _ = make()
    replica.start_catchup()
    first = host.requests[-1][2]
    page(replica, host, [record(at(2))], seq=1, end=True, more=True, correlation=first)
    assert len(host.requests) == 2     # the second page asked for; seq 0 still missing
    second = host.requests[-1][2]
    page(replica, host, [record(at(3))], seq=0, end=True, more=True, correlation=second)
    assert len(host.requests) == 2     # a third waits until the first is stored
    page(replica, host, [record(at(1))], seq=0, end=False, correlation=first)
    assert len(host.requests) == 3 and host.requests[-1][0] == at(3)


def test_a_refused_catchup_ends_it_and_says_so(clock):
    replica, host, _ = make()
    replica.start_catchup()
    replica.handle(Item('refused', messages.ErrorReply(KEY, "unknown binding 'x'"),
                        host.requests[-1][2]))
    assert replica.state is State.REFUSED and replica.refused == "unknown binding 'x'"
    assert 'refused-' + KEY in host.faults.kinds
    assert not replica.caught_up.is_set()
    live(replica, at(9), at(8))        # a hole: a new catch-up, the refusal forgotten
    assert replica.state is State.ASKING and replica.refused is None


def test_a_refusal_for_an_old_request_changes_nothing(clock):
    replica, host, _ = make()
    replica.start_catchup()
    replica.handle(Item('refused', messages.ErrorReply(KEY, 'no'), b'stranger'))
    assert replica.state is State.ASKING


def test_nobody_answering_while_connected_carries_on_live(clock):
    replica, host, store = make(FakeStore([at(1)]))
    replica.start_catchup()
    clock.now += 19
    replica.idle()
    assert replica.state is State.ASKING
    clock.now += 1                     # startup_max_tries x startup_wait_before_retry
    replica.idle()
    assert replica.state is State.UNANSWERED and 'unanswered' in host.faults.kinds
    assert not replica.caught_up.is_set()
    # a protocol-1 live record has no prev: after no answer it cannot be known to follow
    live(replica, at(2), None)
    assert replica.state is State.ASKING


def test_a_slow_responder_whose_status_says_online_is_waited_for(clock):
    """One busy worker and many secondaries: the first page may come after the start-up
    patience (20 s). A responder known to be online is not taken for absent so soon
    (which dropped its late answer and waited for a live record's hole): the page is asked
    for again after each start-up patience (a request may have been lost), its answer is
    taken however late, and only after startup_max_tries x page_timeout (120 s) is it taken
    for one that does not answer (a request_topic that differs)."""
    replica, host, store = make(FakeStore([at(1)]))
    host.online = True
    replica.start_catchup()
    clock.now += 19
    replica.idle()
    assert replica.state is State.ASKING and len(host.requests) == 1
    clock.now += 6
    replica.idle()
    assert replica.state is State.ASKING and 'unanswered' not in host.faults.kinds
    assert len(host.requests) == 2
    clock.now += 40
    replica.idle()
    assert replica.state is State.ASKING and len(host.requests) == 3
    page(replica, host, [record(at(2)), record(at(3))], newest=at(3))
    assert replica.state is State.LIVE and replica.position == at(3)
    # and one that never answers
    replica.start_catchup()
    for _ in range(5):
        clock.now += 21
        replica.idle()
        assert replica.state is State.ASKING
    clock.now += 16                    # 121 s
    replica.idle()
    assert replica.state is State.UNANSWERED and 'unanswered' in host.faults.kinds


def test_while_disconnected_nobody_is_asked_until_the_connection(clock):
    replica, host, _ = make()
    host.up = False
    replica.start_catchup()
    assert host.requests == []
    clock.now += 30
    replica.idle()
    assert replica.state is State.ASKING        # not "unanswered": nobody could answer
    host.up = True
    replica.want_catchup()                      # what the loop thread does on connecting
    replica.idle()
    assert len(host.requests) == 1 and replica.state is State.ASKING


def test_a_silent_page_is_asked_for_again_after_page_timeout(clock):
    replica, host, _ = make()
    replica.start_catchup()
    page(replica, host, [record(at(1))], seq=0, end=False)
    clock.now += 59
    replica.idle()
    assert len(host.requests) == 1
    clock.now += 1
    replica.idle()
    assert len(host.requests) == 2 and host.requests[-1][0] == at(1)


# ------------------------------------------------------------------------------------------------
# live records
# ------------------------------------------------------------------------------------------------

def test_a_live_record_that_follows_is_stored_and_acknowledged(clock):
    replica, host, store = make(FakeStore([at(1)]))
    replica.start_catchup()
    page(replica, host, [])
    message = live(replica, at(2), at(1))
    assert store.one == [at(2)] and host.acked == [message]
    assert replica.state is State.LIVE


def test_a_hole_before_a_live_record_starts_a_catchup_and_holds_the_record(clock):
    replica, host, store = make(FakeStore([at(1)]))
    replica.start_catchup()
    page(replica, host, [])
    message = live(replica, at(5), at(4))
    assert replica.state is State.ASKING and host.requests[-1][0] == at(1)
    assert host.acked == [message]     # acknowledged at once, though held
    assert store.one == []
    page(replica, host, [record(at(2)), record(at(3)), record(at(4))])
    assert store.bulk[-1] == [at(2), at(3), at(4)] and store.one == [at(5)]
    assert replica.state is State.LIVE and replica.position == at(5)


def test_live_records_held_during_a_catchup_go_in_datetime_order(clock):
    replica, host, store = make(FakeStore([at(1)]))
    replica.start_catchup()
    live(replica, at(4), at(3))
    live(replica, at(3), at(2))
    page(replica, host, [record(at(2))])
    assert store.one == [at(3), at(4)] and replica.state is State.LIVE


def test_a_live_record_already_here_is_not_stored_again(clock):
    replica, host, store = make(FakeStore([at(1), at(2)]))
    replica.start_catchup()
    page(replica, host, [])
    live(replica, at(2), at(1))
    assert store.one == []


# ------------------------------------------------------------------------------------------------
# the engine as the sink (main binding under weewxd)
# ------------------------------------------------------------------------------------------------

def test_the_newest_record_of_a_catchup_goes_through_the_engine(clock):
    delivered = []
    replica, host, store = make(deliver=lambda r, days=None: delivered.append(r['dateTime']))
    replica.start_catchup()
    page(replica, host, [record(at(1)), record(at(2)), record(at(3))])
    assert store.bulk == [[at(1), at(2)]] and delivered == [at(3)]
    assert replica.position == at(3)


def test_catchup_engine_hands_every_record_to_the_engine(clock):
    delivered = []
    replica, host, store = make(deliver=lambda r, days=None: delivered.append(r['dateTime']),
                                catchup='engine')
    replica.start_catchup()
    page(replica, host, [record(at(1)), record(at(2))])
    assert store.bulk == [] and delivered == [at(1), at(2)]


def test_an_older_record_is_stored_here_not_handed_to_the_engine(clock):
    delivered = []
    replica, host, store = make(FakeStore([at(1), at(3)]),
                                deliver=lambda r, days=None: delivered.append(r['dateTime']))
    replica.start_catchup()
    page(replica, host, [])
    live(replica, at(2), 0)            # the primary's clock stepped back
    assert store.one == [at(2)] and delivered == []
    assert replica.position == at(3)


# ------------------------------------------------------------------------------------------------
# protocol 1
# ------------------------------------------------------------------------------------------------

def test_a_protocol_1_round_with_new_records_asks_again_and_one_without_ends(clock):
    replica, host, store = make()
    replica.start_catchup()
    replica.post_legacy([record(at(1)), record(at(2))])
    handle_all(replica)
    assert replica.state is State.RECEIVING and replica.legacy and replica.busy
    assert store.bulk == [[at(1), at(2)]]
    clock.now += 20
    replica.idle()                     # quiet: the round is over, it brought records
    assert replica.state is State.ASKING and host.requests[-1][0] == at(2)
    clock.now += 20
    replica.idle()                     # the next round brings nothing: caught up
    assert replica.state is State.LIVE and replica.caught_up.is_set()


def test_a_protocol_1_gap_is_asked_about_again_from_before_it(clock):
    replica, host, store = make(FakeStore([at(0)]))
    replica.start_catchup()
    replica.post_legacy([record(at(1)), record(at(5)), record(at(6))])   # 2..4 lost
    handle_all(replica)
    clock.now += 20
    replica.idle()
    assert host.requests[-1][0] == at(6)     # new records: ask again from the newest
    clock.now += 20
    replica.idle()                           # nothing new: now the gap
    assert host.requests[-1][0] == at(1) and replica.state is State.ASKING
    replica.post_legacy([record(at(2)), record(at(3)), record(at(4))])
    handle_all(replica)
    assert store.one == [at(2), at(3), at(4)]        # holes filled in place
    clock.now += 20
    replica.idle()
    assert store.rebuilt == [(at(2), at(4))]         # their days' summaries rebuilt
    clock.now += 20
    replica.idle()
    assert replica.state is State.LIVE


def test_a_protocol_1_flood_beyond_the_buffer_makes_the_round_partial(clock, monkeypatch):
    monkeypatch.setattr(rp, 'MAX_LEGACY', 2)
    replica, host, store = make()
    replica.start_catchup()
    replica.post_legacy([record(at(1)), record(at(2))])
    replica.post_legacy([record(at(3))])             # no room: dropped, round partial
    handle_all(replica)
    assert store.bulk == [[at(1), at(2)]]
    clock.now += 20
    replica.idle()
    assert replica.state is State.ASKING and host.requests[-1][0] == at(2)
    clock.now += 20
    replica.idle()
    assert replica.state is State.LIVE


def test_a_protocol_2_page_means_the_responder_was_upgraded(clock):
    replica, host, _ = make()
    replica.start_catchup()
    replica.post_legacy([record(at(1))])
    handle_all(replica)
    assert replica.legacy
    replica.start_catchup()
    page(replica, host, [record(at(2))])
    assert not replica.legacy and replica.state is State.LIVE


# ------------------------------------------------------------------------------------------------
# the inbox
# ------------------------------------------------------------------------------------------------

def test_a_catchup_request_survives_a_full_inbox(clock):
    replica, host, _ = make()
    for _ in range(replica.inbox.maxsize):
        replica.inbox.put_nowait(Item('wake'))
    replica.want_catchup()             # no room for the wake-up: the flag is enough
    replica.idle()
    assert replica.state is State.ASKING and len(host.requests) == 1
