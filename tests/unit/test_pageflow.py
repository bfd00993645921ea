"""replica.PageFlow: which pages are outstanding, and when the next one is asked for."""

from user.mqttreplicate.replica import PIPELINE, PageFlow


class Sender:
    def __init__(self):
        self.sent = []

    def __call__(self, since, until):
        self.sent.append((since, until))
        return b'c%d' % len(self.sent)


def test_the_next_page_is_asked_for_at_the_end_of_one():
    send = Sender()
    flow = PageFlow(send)
    flow.start(100)
    assert send.sent == [(100, None)] and flow.first() == b'c1'
    assert flow.on_end(b'c1', 1, 200)
    assert send.sent == [(100, None), (200, None)]
    assert flow.is_current(b'c1') and flow.is_current(b'c2')


def test_a_repeated_end_asks_for_nothing():
    """A QoS 1 duplicate of a page's end message must not ask for the next page twice."""
    send = Sender()
    flow = PageFlow(send)
    flow.start(100)
    assert flow.on_end(b'c1', 1, 200)
    assert flow.on_end(b'c1', 1, 200)
    assert send.sent == [(100, None), (200, None)]
    flow.consumed(b'c1')
    assert flow.on_end(b'c2', 1, 300)
    assert flow.on_end(b'c2', 1, 300)
    assert send.sent == [(100, None), (200, None), (300, None)]


def test_more_without_an_advancing_last_is_refused():
    send = Sender()
    flow = PageFlow(send)
    flow.start(100, until=1000)
    assert flow.on_end(b'c1', 1, None) is False         # more=1 without last
    assert flow.on_end(b'c1', 1, 100) is False          # last does not advance
    assert flow.on_end(b'c1', 1, 50) is False           # last goes back
    assert flow.on_end(b'c1', 1, 1001) is False         # past until
    assert send.sent == [(100, 1000)]
    assert flow.on_end(b'c1', 1, 1000)                  # a right end still counts
    assert send.sent == [(100, 1000), (1000, 1000)]


def test_the_last_page_needs_no_last():
    send = Sender()
    flow = PageFlow(send)
    flow.start(100)
    assert flow.on_end(b'c1', 0, None)
    assert send.sent == [(100, None)]


def test_at_most_two_pages_outstanding_and_a_deferred_one_follows():
    assert PIPELINE == 2
    send = Sender()
    flow = PageFlow(send)
    flow.start(0)
    assert flow.on_end(b'c1', 1, 10)                   # asks for c2
    assert flow.on_end(b'c2', 1, 20)                   # no room: deferred
    assert send.sent == [(0, None), (10, None)]
    flow.consumed(b'c1')
    assert send.sent == [(0, None), (10, None), (20, None)]
    assert flow.first() == b'c2'


def test_an_end_of_an_old_request_is_ignored():
    send = Sender()
    flow = PageFlow(send)
    flow.start(0)
    flow.start(50)                                      # a new catch-up
    assert flow.on_end(b'c1', 1, 10)
    assert send.sent == [(0, None), (50, None)]
    assert not flow.is_current(b'c1')
