"""status.StatusPublisher against a fake transport: what each role's status topics carry
(online pictures, the will, the final offline messages), and the order of pictures
published by two threads at once."""

import json
import threading
import time

from user.mqttreplicate import VERSION, protocol
from user.mqttreplicate.status import StatusPublisher

TOPICS = {'weewx': 'replicate/status/weewx', 'garden': 'replicate/status/garden'}


class FakeTransport:
    def __init__(self, delay=0.0):
        self.sent = []
        self.delay = delay

    def publish(self, topic, payload, user_properties=(), qos=None, retain=False):
        if self.delay:
            time.sleep(self.delay)          # lets another thread run in between
        self.sent.append((topic, payload, qos, retain))


def test_offline_payload_will_and_finals():
    publisher = StatusPublisher(None, 'responder', 'primary-1', TOPICS)
    offline = b'{"state":"offline","role":"responder","clientid":"primary-1"}'
    assert publisher.offline == offline
    assert publisher.offline == protocol.encode_json(
        {'state': 'offline', 'role': 'responder', 'clientid': 'primary-1'})
    assert publisher.will == ('replicate/status/weewx', offline)
    assert publisher.finals() == [('replicate/status/weewx', offline),
                                  ('replicate/status/garden', offline)]


def test_each_instance_is_published_retained_with_qos_1_in_topic_order():
    transport = FakeTransport()
    publisher = StatusPublisher(transport, 'requester', 'secondary-1', TOPICS)
    publisher.publish({'garden': {'state': 'online', 'n': 2},
                       'weewx': {'state': 'online', 'n': 1},
                       'elsewhere': {'state': 'online'}})      # no topic: left out
    assert transport.sent == [
        ('replicate/status/weewx', b'{"state":"online","n":1}', 1, True),
        ('replicate/status/garden', b'{"state":"online","n":2}', 1, True)]


def test_an_instance_missing_from_the_picture_is_not_published():
    transport = FakeTransport()
    StatusPublisher(transport, 'responder', 'p', TOPICS).publish({'garden': {'x': 1}})
    assert [topic for topic, *_ in transport.sent] == ['replicate/status/garden']


def test_online_fields():
    publisher = StatusPublisher(None, 'requester', 'secondary-1', TOPICS)
    before = int(time.time())
    fields = publisher.online('garden')
    assert list(fields) == ['state', 'role', 'version', 'clientid', 'instance', 'time']
    assert fields['state'] == 'online' and fields['role'] == 'requester'
    assert fields['version'] == VERSION and fields['clientid'] == 'secondary-1'
    assert fields['instance'] == 'garden' and before <= fields['time'] <= time.time()
    assert 'instance' not in publisher.online()


def test_a_picture_taken_later_is_never_published_earlier():
    """Two threads publish pictures of a counter: the picture is taken under the lock, so
    the order on the wire is the order of the pictures."""
    transport = FakeTransport(delay=0.001)
    publisher = StatusPublisher(transport, 'requester', 'secondary-1', TOPICS)
    counter = iter(range(10 ** 6))

    def picture():
        n = next(counter)
        return {'weewx': {'n': n}, 'garden': {'n': n}}

    def publish_many():
        for _ in range(30):
            publisher.publish(picture)

    threads = [threading.Thread(target=publish_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for topic in TOPICS.values():
        seen = [json.loads(payload)['n'] for t, payload, _, _ in transport.sent if t == topic]
        assert seen == sorted(seen) and len(seen) == 120
