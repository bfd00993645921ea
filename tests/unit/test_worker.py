"""worker.Worker: the guard that no exception ends silently, the lifecycle (start / stop /
is_alive) and the queue-serving worker, with real threads and short back-offs."""

import logging
import queue
import threading
import time

import pytest

from tests.support.waiting import wait_until
from user.mqttreplicate.faults import RateLimitedLog
from user.mqttreplicate.worker import Worker

LOGGER = 'tests.unit.worker'


class Terminate(Exception):
    """weewxd's own: what its SIGTERM handler raises."""


@pytest.fixture
def faults(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return RateLimitedLog(logging.getLogger(LOGGER))


def errors(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.ERROR]


@pytest.fixture
def thread_exceptions(monkeypatch):
    """Exceptions that ended a thread (instead of printing them)."""
    seen = []
    monkeypatch.setattr(threading, 'excepthook', lambda args: seen.append(args.exc_type))
    return seen


def test_failures_are_logged_once_per_kind_and_the_worker_keeps_going(faults, caplog):
    turns, seen = [], []
    failing = [RuntimeError('one'), RuntimeError('two'), KeyError('three'), RuntimeError('4')]

    def body():
        turns.append(time.monotonic())
        if failing:
            raise failing.pop(0)
        time.sleep(0.01)

    worker = Worker('test-worker', body, faults, 'test: turn failed', on_failure=seen.append,
                    backoff=0.05)
    worker.start()
    try:
        wait_until(lambda: len(turns) >= 8, 5)
        assert worker.is_alive() and worker.thread.name == 'test-worker'
    finally:
        assert worker.stop(5)
    assert not worker.is_alive()
    assert errors(caplog) == ['test: turn failed: RuntimeError: one',
                              "test: turn failed: KeyError: 'three'"]
    assert [str(e) for e in seen] == ['one', 'two', "'three'", '4']
    assert worker.failures == 4
    # each failure is followed by the back-off before the next turn
    assert all(b - a >= 0.045 for a, b in zip(turns[:4], turns[1:5]))
    assert any(r.getMessage() == 'traceback' and r.exc_info for r in caplog.records)


def test_a_failing_on_failure_is_logged_too(faults, caplog):
    calls = []

    def body():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError('body')

    def on_failure(e):
        raise OSError('on_failure')

    worker = Worker('test-worker', body, faults, 'test: failed', on_failure=on_failure,
                    backoff=0.01)
    worker.start()
    wait_until(lambda: len(calls) >= 3, 5)
    assert worker.is_alive()
    worker.stop(5)
    assert errors(caplog) == ['test: failed: ValueError: body', 'test: failed: OSError: '
                              'on_failure']


def test_terminate_is_raised_again_and_ends_the_worker(faults, caplog, thread_exceptions):
    cleaned = []

    def body():
        raise Terminate()

    worker = Worker('test-worker', body, faults, 'test: failed', cleanup=lambda: cleaned.append(1))
    worker.start()
    wait_until(lambda: not worker.is_alive(), 5)
    assert thread_exceptions == [Terminate] and cleaned == [1]
    assert errors(caplog) == [] and worker.failures == 0


def test_done_ends_the_worker_and_start_runs_it_again(faults):
    turns = []

    def body():
        turns.append(1)
        return Worker.DONE if len(turns) in (3, 5) else None

    worker = Worker('test-worker', body, faults, 'test: failed')
    worker.start()
    wait_until(lambda: not worker.is_alive(), 5)
    assert len(turns) == 3
    worker.start()
    wait_until(lambda: not worker.is_alive(), 5)
    assert len(turns) == 5


def test_setup_is_tried_again_until_it_works_and_cleanup_runs_at_the_end(faults, caplog):
    events = []

    def setup():
        events.append('setup')
        if events.count('setup') < 3:
            raise OSError('no database yet')

    def body():
        events.append('body')
        time.sleep(0.01)

    def cleanup():
        events.append('cleanup')
        raise RuntimeError('close failed')

    worker = Worker('test-worker', body, faults, 'test: failed', setup=setup,
                    cleanup=cleanup, backoff=0.01)
    worker.start()
    wait_until(lambda: 'body' in events, 5)
    worker.stop(5)
    assert events[:4] == ['setup', 'setup', 'setup', 'body']
    assert events[-1] == 'cleanup' and events.count('cleanup') == 1
    assert errors(caplog) == ['test: failed: OSError: no database yet',
                              'test: failed: RuntimeError: close failed']


def test_a_stopped_worker_does_not_start_its_body(faults):
    stopping = threading.Event()
    stopping.set()
    turns = []
    worker = Worker('test-worker', lambda: turns.append(1), faults, 'test: failed',
                    stopping=stopping)
    worker.start()
    worker.thread.join(5)
    assert turns == [] and not worker.is_alive()


def test_serving_handles_items_in_order_and_idles(faults):
    inbox = queue.Queue()
    handled, idles = [], []
    worker = Worker.serving('test-serving', inbox, handled.append, faults, 'test: failed',
                            idle=lambda: idles.append(time.monotonic()), every=0.1)
    worker.start()
    for n in range(5):
        inbox.put(n)
    wait_until(lambda: len(handled) == 5 and len(idles) >= 2, 5)
    assert handled == [0, 1, 2, 3, 4]
    worker.stop(5)
    assert not worker.is_alive()


def test_serving_idles_while_items_keep_coming(faults):
    inbox = queue.Queue()
    idles = []

    def handle(item):
        time.sleep(0.02)
        inbox.put(item + 1)            # never empty

    worker = Worker.serving('test-serving', inbox, handle, faults, 'test: failed',
                            idle=lambda: idles.append(1), every=0.1)
    inbox.put(0)
    worker.start()
    time.sleep(0.6)
    worker.stop(5)
    assert 3 <= len(idles) <= 7


def test_a_failing_handle_does_not_end_the_serving_worker(faults, caplog):
    inbox = queue.Queue()
    handled = []

    def handle(item):
        if item == 'bad':
            raise ValueError('bad item')
        handled.append(item)

    worker = Worker.serving('test-serving', inbox, handle, faults, 'test: request failed',
                            backoff=0.01)
    worker.start()
    for item in ('a', 'bad', 'b', 'bad', 'c'):
        inbox.put(item)
    wait_until(lambda: handled == ['a', 'b', 'c'], 5)
    assert worker.is_alive()
    worker.stop(5)
    assert errors(caplog) == ['test: request failed: ValueError: bad item']


def test_stop_wakes_a_waiting_serving_worker_at_once(faults):
    worker = Worker.serving('test-serving', queue.Queue(), lambda item: None, faults,
                            'test: failed', every=30)
    worker.start()
    time.sleep(0.05)
    started = time.monotonic()
    assert worker.stop(5)
    assert time.monotonic() - started < 1


def test_a_none_item_ends_the_serving_worker_that_takes_it(faults):
    inbox = queue.Queue()
    workers = [Worker.serving('test-serving-%d' % n, inbox, lambda item: None, faults,
                              'test: failed', every=30) for n in range(2)]
    for worker in workers:
        worker.start()
    inbox.put(None)
    wait_until(lambda: sum(w.is_alive() for w in workers) == 1, 5)
    inbox.put(None)
    wait_until(lambda: not any(w.is_alive() for w in workers), 5)
