"""Requests and their answers, as a test client subscribed to both topics sees them.

A test that counts catch-up pages must count the answers to the catch-up's requests, not
"whatever arrived on the response topic within N seconds": the requester's own
verification (a digest request and its answer, on the same topics), acks, and anything
else sent later would be counted too, or a slow machine would cut the count short. So the
answers are matched to their request by CorrelationData, and a test waits until every
request it counts is answered.

    monitor = rig.client(broker)
    monitor.subscribe('replicate/request/#')
    monitor.subscribe('replicate/response/#')
    ... the requester catches up ...
    talk = Conversation.collect(monitor, Conversation.catchup_done)
    for request in talk.catchup_requests():
        page = talk.answers(request)            # its messages, seq 0 .. the one with end=1

Messages reach a subscriber in the order the broker got them, and an answer is sent after
its request arrived: a client subscribed to both topics sees every request before its
answer.
"""

import json
import queue
import struct
import time
import zlib

from tests.support.mqtt import user_properties

REQUEST_PREFIX = 'replicate/request/'
RESPONSE_PREFIX = 'replicate/response/'


def correlation(message):
    """The CorrelationData of a received message (None without one)."""
    return getattr(getattr(message, 'properties', None), 'CorrelationData', None)


def operation(message):
    """The op of a request (records when it names none)."""
    return user_properties(message).get('op', 'records')


def is_request(message):
    return message.topic.startswith(REQUEST_PREFIX)


def is_response(message):
    return message.topic.startswith(RESPONSE_PREFIX)


def is_catchup_request(message):
    """A protocol-2 request for records that is no repair (replace=1 is the verification's)."""
    props = user_properties(message)
    return is_request(message) and props.get('protocol') == '2' \
        and operation(message) == 'records' and props.get('replace') != '1'


def unpack(payload):
    """The records of a packed payload, read as docs/protocol.md describes it."""
    size = int.from_bytes(payload[:4], 'little')
    header = json.loads(payload[4:4 + size])
    rows, columns, offset = header['rows'], [], 4 + size
    for code in header['types']:
        columns.append(struct.unpack_from('<%d%s' % (rows, code), payload, offset))
        offset += 8 * rows
    assert offset == len(payload)
    return [{k: v for k, v in zip(header['columns'], row) if v is not None and v == v}
            for row in zip(*columns)]


def records(message):
    """The records of a page message (its payload decoded as its encoding says); none in
    a message of daily summaries (kind=days)."""
    props = user_properties(message)
    if props.get('kind') == 'days':
        return []
    payload = message.payload
    if props.get('encoding') in ('zlib+json', 'zlib+packed'):
        payload = zlib.decompress(payload)
    if props.get('layout') == 'packed':        # binary columns (docs/protocol.md)
        return unpack(payload)
    body = json.loads(payload)
    if props.get('layout') == 'columns':       # column-major: one list of values a column
        names = body['columns']
        return [{k: v for k, v in zip(names, row) if v is not None}
                for row in zip(*body['values'])]
    return body


def collect(client, done, timeout=30.0, what='the messages waited for'):
    """The messages client receives from now on, up to the first one after which
    done(messages) is true (later ones stay queued for the next call); fail after timeout
    seconds, saying what arrived."""
    out = []
    deadline = time.monotonic() + timeout
    while not done(out):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError('timed out after %.0f s waiting for %s; %d messages arrived, '
                                 'the last ones: %s' % (
                                     timeout, what, len(out),
                                     [(m.topic, user_properties(m)) for m in out[-5:]]))
        try:
            out.append(client.messages.get(timeout=min(remaining, 0.5)))
        except queue.Empty:
            pass
    return out


class Conversation:
    """Messages of a client subscribed to the request and the response topics, with each
    answer matched to its request."""

    def __init__(self, messages=()):
        self.messages = []
        self._requests = []
        self._asked = set()         # their correlations
        self._answers = {}          # correlation -> [response messages]
        self._ends = {}             # correlation -> user properties of its end=1 message
        self._strangers = []        # responses to no request seen (yet)
        for message in messages:
            self.add(message)

    def add(self, message):
        self.messages.append(message)
        key = correlation(message)
        if is_request(message):
            self._requests.append(message)
            self._asked.add(key)
        elif is_response(message):
            if key is None or key not in self._asked:
                self._strangers.append(message)
                return
            self._answers.setdefault(key, []).append(message)
            props = user_properties(message)
            if props.get('end') == '1':
                self._ends.setdefault(key, props)

    @classmethod
    def collect(cls, client, done, timeout=30.0, what='the catch-up\'s answers'):
        """Collect client's messages from now on until done(conversation) is true (later
        ones stay queued); fail after timeout seconds."""
        talk = cls()
        collected = []

        def enough(messages):
            for message in messages[len(collected):]:
                collected.append(message)
                talk.add(message)
            return done(talk)
        collect(client, enough, timeout, what)
        return talk

    def requests(self, predicate=is_request):
        return [m for m in self._requests if predicate(m)]

    def catchup_requests(self):
        """The requests for records (no repair), oldest first."""
        return self.requests(is_catchup_request)

    def answers(self, request):
        """The response messages carrying request's CorrelationData, in arrival order."""
        return list(self._answers.get(correlation(request), ()))

    def end(self, request):
        """The user properties of the last message (end=1) of request's answer, or None."""
        return self._ends.get(correlation(request))

    def unanswered(self, requests):
        return [r for r in requests if self.end(r) is None]

    def strangers(self):
        """Response messages that answer no request seen before them."""
        return list(self._strangers)

    @staticmethod
    def catchup_done(talk):
        """Every catch-up request seen is answered, and one answer said "no more" (more=0):
        the catch-up is over, and all its requests and answers are in."""
        requests = talk.catchup_requests()
        return bool(requests) and not talk.unanswered(requests) \
            and any(talk.end(r)['more'] == '0' for r in requests)
