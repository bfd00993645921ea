"""One lifecycle for the package's own threads: a named daemon thread that runs one turn of
its loop again and again until it is stopped, and that no exception ends silently.

The MQTT network loop is paho's own thread, not one of these; transport.NetworkLoop gives it
the same start / stop / is_alive shape.
"""

import logging
import queue
import threading
import time

from .faults import is_termination

BACKOFF = 1.0            # seconds between a failed turn and the next one
FAILED = object()        # what a turn that raised returns


class Worker:
    """A named daemon thread that calls body() again and again, until stop() or until body
    returns Worker.DONE.

        worker = Worker('responder-status', self._tick, self.faults,
                        'responder: status not published')
        worker.start()
        ...
        worker.is_alive()          # False once the thread ended
        worker.stop(5)             # sets stopping, wakes the body, joins for at most 5 s

    A thread that serves a queue is made with Worker.serving() (see there).

    The guard: an exception raised by body() (or setup) is logged through faults (a
    faults.RateLimitedLog) as '<failed>: <exception type>: <text>', at most one line per
    interval for each kind of exception, with the traceback at debug level; on_failure(exc)
    runs, and after `backoff` seconds the next turn starts. weewxd's Terminate
    (faults.is_termination) is raised again and ends the thread. So a worker ends only when
    it is stopped, when its body says DONE, or on Terminate: is_alive() tells.

    Arguments, each but the first four optional:
      name: the thread's name.
      body(): one turn of the loop: wait for something (at most a second or so, so a stop
          is noticed), then do it. Returns None, or Worker.DONE to end the worker.
      faults: the role's RateLimitedLog; failed: the start of a failure's log line.
      setup(): runs once in the thread before the first turn (open connections); a failure
          is logged as above and setup runs again after the back-off, until it succeeds or
          the worker is stopped.
      cleanup(): runs once in the thread when it ends, however it ends (setup may not have
          succeeded); a failure there is logged.
      on_failure(exc): runs in the thread after a failure was logged (close the connections
          the failure may have broken, so the next turn opens new ones).
      wake(): stop() calls it after setting stopping, to wake a body that waits.
      stopping: a threading.Event, to share one with other workers or the role (default:
          one of its own). A body that waits should wait on it.
      backoff: seconds between a failure and the next turn.
    """

    DONE = 'done'

    def __init__(self, name, body, faults, failed, setup=None, cleanup=None, on_failure=None,
                 wake=None, stopping=None, backoff=BACKOFF):
        self.name = name
        self.body = body
        self.faults = faults
        self.failed = failed
        self.setup = setup
        self.cleanup = cleanup
        self.on_failure = on_failure
        self.wake = wake
        self.stopping = stopping if stopping is not None else threading.Event()
        self.backoff = backoff
        self.failures = 0          # calls of body, setup, on_failure or cleanup that raised
        self.thread = None

    @classmethod
    def serving(cls, name, inbox, handle, faults, failed, idle=None, every=1.0, **kwargs):
        """A worker for a queue.Queue: each turn takes one item from inbox (waiting at most
        `every` seconds) and calls handle(item); idle() is called when the wait found
        nothing and, while items keep coming, at least every `every` seconds (time-outs
        and periodic work). A None item ends the worker that takes it; stop() puts one in,
        so a waiting worker ends at once. Other arguments as for Worker().

            writer = Worker.serving('requester-writer', inbox, handle, faults,
                                    'requester: writer failed', idle=tick,
                                    setup=open_all, cleanup=close_all)
        """
        last_idle = time.monotonic()

        def turn():
            nonlocal last_idle
            try:
                item = inbox.get(timeout=every)
            except queue.Empty:
                item = queue.Empty
            if item is None:
                return cls.DONE
            if item is not queue.Empty:
                handle(item)
            if idle is not None and (item is queue.Empty
                                     or time.monotonic() - last_idle >= every):
                last_idle = time.monotonic()
                idle()
            return None

        def wake():
            try:
                inbox.put_nowait(None)
            except queue.Full:
                pass                   # a full queue is read within a second anyway

        return cls(name, turn, faults, failed, wake=wake, **kwargs)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self):
        """Start the thread (again, if its body said DONE). Returns at once. A worker
        that was stopped stays stopped: its thread ends at once."""
        if self.is_alive():
            return
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def stop(self, timeout=10.0):
        """Set stopping, wake the body, and wait at most timeout seconds for the thread to
        end. True if it ended."""
        self.stopping.set()
        if self.wake is not None:
            self.wake()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        return not self.is_alive()

    def is_alive(self):
        return self.thread is not None and self.thread.is_alive()

    # --- the thread --------------------------------------------------------------------------

    def _run(self):
        try:
            while self.setup is not None and not self.stopping.is_set():
                if self._turn(self.setup) is not FAILED:
                    break
            while not self.stopping.is_set():
                if self._turn(self.body) == self.DONE:
                    break
        finally:
            if self.cleanup is not None:
                self._turn(self.cleanup, after_failure=False)

    def _turn(self, function, after_failure=True):
        """What function() returns; or, if it raised, FAILED once the failure was logged
        and (after_failure) on_failure ran and the back-off was waited. Terminate is raised
        again."""
        try:
            return function()
        except Exception as e:
            if is_termination(e):
                raise
            self.failures += 1
            self._log(e)
            failure = e
        if after_failure:
            if self.on_failure is not None:
                self._turn(lambda: self.on_failure(failure), after_failure=False)
            self.stopping.wait(self.backoff)
        return FAILED

    def _log(self, e):
        """One line per kind of failure and interval; the traceback at debug level."""
        kind = type(e).__name__
        self.faults(logging.ERROR, '%s-%s' % (self.failed, kind), '%s: %s: %s', self.failed,
                    kind, e)
        self.faults.logger.debug('traceback', exc_info=True)
