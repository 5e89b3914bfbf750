"""The REST front end: one asyncio event loop reads requests, a bounded thread pool answers them.

Why not a thread per connection (http.server): a client that sends half a request and stalls
holds a thread for as long as it likes, and a few hundred such clients exhaust the server. Here a
connection costs a coroutine until its request is complete; only complete requests reach the
worker threads, so stalled clients cannot starve the model. Bounds, all per connection:
- `read_timeout`: the next request must have arrived in full within this many seconds (idle
  keep-alive time included; a client cannot stretch it by trickling bytes), and each response must
  be taken by the client within it too; otherwise the connection is closed.
- framing errors are answered, then the connection is closed (serving/http11.py says why);
- beyond `max_connections` open connections, new ones get a 503 and are closed at once."""

import asyncio
import collections
import contextlib
import errno
import json
import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from coophash_keras.serving.errors import ListenError
from coophash_keras.serving.http11 import MAX_LINE, FramingError, read_request, response_bytes

log = logging.getLogger("coophash.serving")

# Bodies up to this size are parsed on the event loop when they join a merged batch (see
# RestFrontend._answer): a batch-1 b64 PNG request is 2 to 4 KiB; 16 KiB parses in well under 1 ms.
INLINE_MAX_BYTES = 16 * 1024
LINGER_S = 2.0  # after an error answer, how long unread request bytes are drained before closing


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
    """Serves `app.handle(method, target, body) -> (status, content type, body)` over HTTP/1.1."""

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
        handled on the event loop when the app offers `handle_nowait` (see _answer)."""
        self.app = app
        self.inline_max_bytes = INLINE_MAX_BYTES if inline_max_bytes is None else inline_max_bytes
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.sock = sock
        self.server_address = sock.getsockname()[:2]
        self._pool = ThreadPoolExecutor(num_threads or default_num_threads(), thread_name_prefix="rest-worker")
        self._loop = asyncio.new_event_loop()
        self._wakeups = _Wakeups(self._loop)
        self._stopping = None  # an asyncio.Event, made on the loop
        self._connections = set()
        self._thread = None
        self._warned_full = False

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
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.sock.close()

    def wait(self):
        self._thread.join()

    def _run(self, ready):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve(ready))
        finally:
            self._loop.close()

    async def _serve(self, ready):
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self.sock, limit=MAX_LINE)
        ready.set()
        await self._stopping.wait()
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader, writer):
        host, port = (writer.get_extra_info("peername") or ("?", "?"))[:2]
        peer = f"{host}:{port}"
        if len(self._connections) >= self.max_connections:
            if not self._warned_full:  # once per episode, not once per refused client
                log.warning("%d REST connections open: refusing new ones until some close", len(self._connections))
                self._warned_full = True
            # 503 (UNAVAILABLE) tells a client to come back; it is written without waiting for the
            # client to take it, and the socket closed.
            body = json.dumps({"error": "Too many open connections; retry later"}).encode()
            writer.write(response_bytes(503, "application/json", body, close=True))
            writer.close()
            return
        self._warned_full = False
        task = asyncio.current_task()
        self._connections.add(task)
        deadline = _Deadline(asyncio.get_running_loop(), task)
        try:
            await self._serve_connection(reader, writer, peer, deadline)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.TimeoutError) or deadline.expired:
                log.debug("%s: no complete request or response within %.3g s; closed", peer, self.read_timeout)
            # else shutting down
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("%s: client disconnected (%s)", peer, type(exc).__name__)
        except Exception:  # a bug of ours, not the client's: say so, keep serving others
            log.exception("%s: REST connection failed", peer)
        finally:
            deadline.close()
            self._connections.discard(task)
            writer.transport.abort()  # no-op if already closed; never blocks on a dead client

    async def _serve_connection(self, reader, writer, peer, deadline):
        loop = asyncio.get_running_loop()
        while True:
            deadline.set(self.read_timeout)
            try:
                request = await read_request(reader, writer, self.max_body_bytes)
            except FramingError as exc:
                log.debug("%s: framing error, answered %d and closed: %s", peer, exc.status, exc.message)
                body = json.dumps({"error": exc.message}).encode()  # the form of every error body
                await self._send(writer, response_bytes(exc.status, "application/json", body, close=True), deadline)
                await self._linger(reader, writer)
                return
            deadline.clear()
            if request is None:
                return  # the client closed between requests
            status, content_type, body = await self._answer(loop, request)
            close = not request.keep_alive
            head = request.method == "HEAD"
            await self._send(writer, response_bytes(status, content_type, body, close=close, head=head), deadline)
            if close:
                await self._linger(reader, writer)
                return

    async def _answer(self, loop, request):
        """-> (status, content type, body). A small request that the app can answer from a merged
        batch (handle_nowait) is parsed here, on the event loop, and waits for its rows without a
        thread; everything else runs on a worker thread. Why: with a thread per waiting request,
        each request crossed threads four times, and 16 concurrent clients kept ~20 Python threads
        competing for the GIL and the 2 cores with the model's own threads (measured: the model
        call at batch 8 took 10 ms in the server against 4 ms alone). Parsing a body of at most
        `inline_max_bytes` takes well under a millisecond, so the loop stays responsive."""
        nowait = getattr(self.app, "handle_nowait", None)
        if nowait is not None and len(request.body) <= self.inline_max_bytes:
            out = nowait(request.method, request.target, request.body)
            if isinstance(out, tuple) and len(out) == 2:
                future, finish = out  # finish() answers a failed request's error too
                if not future.done():
                    try:
                        await self._wakeups.wait(future)
                    except asyncio.CancelledError:  # shutting down: drop the request if still queued
                        future.cancel()
                        raise
                return finish(future)
            if out is not None:
                return out
        return await loop.run_in_executor(self._pool, self.app.handle, request.method, request.target, request.body)

    async def _send(self, writer, data, deadline):
        writer.write(data)
        if writer.transport.get_write_buffer_size():  # the usual case is all sent at once: no timer
            deadline.set(self.read_timeout)
            await writer.drain()
        deadline.clear()

    async def _linger(self, reader, writer):
        """Half-close, then drain what the client still sends for a moment, so the answer is not
        lost to a TCP reset (closing with unread input resets the connection)."""
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:  # the client reset the connection first (ENOTCONN): nothing to drain
                return
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await _within(min(LINGER_S, self.read_timeout), _discard(reader))


class _Deadline:
    """A connection's read_timeout: set() before a read or a drain, clear() after; if the time runs
    out in between, the connection's task is cancelled and `expired` tells why.

    What asyncio.timeout does, at a fraction of the cost per request: that makes, schedules and
    cancels a timer for every request (measured: ~18 us, as much as the HTTP framing itself).
    Here set() only moves `when`; the connection keeps at most one timer, and when it fires before
    the current `when` (the deadline has moved on since it was armed) it is armed again for `when`.
    So the timeout is as exact as asyncio.timeout's, and a busy connection's timer fires about
    once per read_timeout instead of once per request."""

    __slots__ = ("_loop", "_task", "_when", "_timer", "expired")

    def __init__(self, loop, task):
        self._loop, self._task = loop, task
        self._when = self._timer = None
        self.expired = False

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
            self.expired = True
            self._task.cancel()
        else:  # moved on since armed (or the loop ran the timer a clock tick early): arm it again
            self._timer = self._loop.call_at(self._when, self._fire)


class _Wakeups:
    """Awaitable completion of concurrent.futures.Future s set by other threads (the batch
    threads), with one wake-up of the loop per burst rather than one per future.

    asyncio.wrap_future costs the setting thread a call_soon_threadsafe per future (a Handle and a
    write to the loop's self-pipe) and the loop a callback that copies the state across. A merged
    batch sets all its requests' futures in a row: here the first schedules one flush on the loop,
    the others only join the queue that flush empties."""

    def __init__(self, loop):
        self._loop = loop
        self._done = collections.deque()  # loop futures whose concurrent future is done
        self._lock = threading.Lock()
        self._scheduled = False

    def wait(self, future):
        """-> an asyncio future (of the loop) that is resolved, with None, once `future` is done."""
        waiter = self._loop.create_future()
        future.add_done_callback(lambda _, waiter=waiter: self._set(waiter))
        return waiter

    def _set(self, waiter):  # any thread
        self._done.append(waiter)
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
            waiter = done.popleft()
            if not waiter.done():  # cancelled meanwhile (shutdown)
                waiter.set_result(None)


async def _within(seconds, coro):
    """await coro, or raise TimeoutError after `seconds`; asyncio.timeout (3.11+) does it without
    wait_for's extra task per request."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await coro
    return await asyncio.wait_for(coro, seconds)


async def _discard(reader):
    while await reader.read(64 * 1024):
        pass
