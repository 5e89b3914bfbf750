"""The REST front end: one asyncio event loop reads requests, a bounded thread pool answers them.

Why not a thread per connection (http.server): a client that sends half a request and stalls
holds a thread for as long as it likes, and a few hundred such clients exhaust the server. Here a
connection costs a Protocol object and its buffer until its request is complete
(serving/connection.py); only complete requests reach the app, so stalled clients cannot starve
the model. Bounds, all per connection:
- `read_timeout`: the next request must have arrived in full within this many seconds (idle
  keep-alive time included; a client cannot stretch it by trickling bytes), and each response must
  be taken by the client within it too; otherwise the connection is closed.
- framing errors are answered, then the connection is closed (serving/http11.py says why);
- beyond `max_connections` open connections, new ones get a 503 and are closed at once."""

import asyncio
import collections
import contextlib
import errno
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from coophash_keras.serving.connection import RestConnection
from coophash_keras.serving.errors import ListenError

# Bodies up to this size are parsed on the event loop when they join a merged batch (see
# RestConnection._answer): a batch-1 b64 PNG request is 2 to 4 KiB; 16 KiB parses in well under 1 ms.
INLINE_MAX_BYTES = 16 * 1024


def listen(host, port, what):
    """A listening socket, or one clear ListenError naming the port (e.g. already in use)."""
    try:
        return socket.create_server((host, port), backlog=1024)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"{what} port {port} on {host} is already in use") from None
        raise ListenError(f"cannot listen on {host}:{port} for {what}: {exc.strerror or exc}") from None


def default_num_threads():
    # TF-Serving uses 4 per core, for C++ threads; ours share the GIL, and more threads than cores
    # only contend for it (measured: 2 threads beat 8 on 2 cores under 16 clients).
    return max(2, os.cpu_count() or 1)


class RestFrontend:
    """Serves `app.handle(method, target, body) -> (status, content type, body)` over HTTP/1.1.

    A small request that the app can answer from a merged batch (`app.handle_nowait`) is parsed
    on the event loop and waits for its rows without a thread; everything else runs on a worker
    thread. Why: with a thread per waiting request, each request crossed threads four times, and
    16 concurrent clients kept ~20 Python threads competing for the GIL and the 2 cores with the
    model's own threads (measured: the model call at batch 8 took 10 ms in the server against
    4 ms alone). Parsing a body of at most `inline_max_bytes` takes well under a millisecond, so
    the loop stays responsive."""

    def __init__(
        self,
        app,
        sock,
        max_body_bytes,
        num_threads=None,
        read_timeout=30.0,
        max_connections=1000,
        inline_max_bytes=None,
    ):
        """`sock`: a listening socket from listen(). `inline_max_bytes`: the largest request body
        handled on the event loop when the app offers `handle_nowait`."""
        self.app = app
        self.handle_nowait = getattr(app, "handle_nowait", None)
        self.inline_max_bytes = INLINE_MAX_BYTES if inline_max_bytes is None else inline_max_bytes
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.sock = sock
        self.server_address = sock.getsockname()[:2]
        self.pool = ThreadPoolExecutor(num_threads or default_num_threads(), thread_name_prefix="rest-worker")
        self._loop = asyncio.new_event_loop()
        self.wakeups = _Wakeups(self._loop)
        self._stopping = None  # an asyncio.Event, made on the loop
        self.connections = set()  # the RestConnections being served
        self.warned_full = False  # the "too many connections" warning was logged this episode
        self._thread = None

    def start(self):
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="rest", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self):
        if self._thread is None:
            self._loop.close()
        elif self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.sock.close()

    def wait(self):
        self._thread.join()

    def deadline_for(self, on_expiry):
        """A connection's read deadline (see _Deadline)."""
        return _Deadline(self._loop, on_expiry)

    def _run(self, ready):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve(ready))
        finally:
            self._loop.close()

    async def _serve(self, ready):
        self._stopping = asyncio.Event()
        server = await self._loop.create_server(lambda: RestConnection(self), sock=self.sock)
        ready.set()
        await self._stopping.wait()
        server.close()
        for connection in list(self.connections):
            connection.shutdown()
        await asyncio.sleep(0)  # the transports' connection_lost callbacks run: sockets closed
        await server.wait_closed()


class _Deadline:
    """A connection's read_timeout: set() when a read or a wait for the client to take an answer
    starts, clear() when it ends; if the time runs out in between, `on_expiry()` is called (the
    connection aborts).

    What asyncio.timeout does, at a fraction of the cost per request: that makes, schedules and
    cancels a timer for every request (measured: ~18 us, as much as the HTTP framing itself).
    Here set() only moves `when`; the connection keeps at most one timer, and when it fires before
    the current `when` (the deadline has moved on since it was armed) it is armed again for `when`.
    So the timeout is as exact as asyncio.timeout's, and a busy connection's timer fires about
    once per read_timeout instead of once per request."""

    __slots__ = ("_loop", "_on_expiry", "_when", "_timer")

    def __init__(self, loop, on_expiry):
        self._loop, self._on_expiry = loop, on_expiry
        self._when = self._timer = None

    def set(self, seconds):
        self._when = self._loop.time() + seconds
        if self._timer is None:
            self._timer = self._loop.call_at(self._when, self._fire)

    def clear(self):
        self._when = None

    def close(self):
        self._when = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self):
        self._timer = None
        if self._when is None:  # not reading or writing now; the next set() arms a timer
            return
        if self._when <= self._loop.time():
            self._on_expiry()
        else:  # moved on since armed (or the loop ran the timer a clock tick early): arm it again
            self._timer = self._loop.call_at(self._when, self._fire)


class _Wakeups:
    """Callbacks on the loop for concurrent.futures.Future s set by other threads (the batch
    threads, the REST workers), with one wake-up of the loop per burst rather than one per future.

    asyncio.wrap_future costs the setting thread a call_soon_threadsafe per future (a Handle and a
    write to the loop's self-pipe) and the loop a callback that copies the state across. A merged
    batch sets all its requests' futures in a row: here the first schedules one flush on the loop,
    the others only join the queue that flush empties."""

    def __init__(self, loop):
        self._loop = loop
        self._done = collections.deque()  # _Call s whose future is done
        self._lock = threading.Lock()
        self._scheduled = False

    def call_when_done(self, future, callback):
        """Call `callback()` on the loop once `future` is done. -> a handle whose cancel() stops
        the call if it has not happened yet (on the loop)."""
        call = _Call(callback)
        future.add_done_callback(lambda _, call=call: self._set(call))
        return call

    def _set(self, call):  # any thread
        self._done.append(call)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._flush)

    def _flush(self):  # on the loop
        with self._lock:
            self._scheduled = False  # a waiter appended from now on schedules a flush of its own
        done = self._done
        while done:
            done.popleft().run()


class _Call:
    """A callback of _Wakeups.call_when_done: run() calls it once, unless cancel() came first
    (the connection is gone)."""

    __slots__ = ("_callback",)

    def __init__(self, callback):
        self._callback = callback

    def run(self):
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()

    def cancel(self):
        self._callback = None
