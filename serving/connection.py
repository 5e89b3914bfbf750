"""One REST connection: an asyncio.Protocol that frames requests with http11.RequestParser and
answers them in order. The bounds it keeps are listed in serving/frontend.py.

Why a Protocol and not asyncio streams: with StreamReader/StreamWriter each connection was a
Task, and each request six `readuntil` awaits, futures and wake-ups on top of the framing itself
(a front end that only echoed a fixed answer cost the event loop 0.12 ms per request). Here the
transport calls data_received, the parser frames what is buffered, and an answer is written from
a callback: no coroutine, no Task, no await per request.

A connection is in one of these states:
- reading: waiting for the next request to be complete (the read deadline runs);
- answering: a request is with the app; bytes that arrive meanwhile are buffered, and reading is
  paused only once more than PAUSE_READING_BYTES are (pausing costs system calls);
- sending: the answer filled the transport's buffer past its high-water mark, and the client must
  take it within read_timeout (the deadline runs until resume_writing);
- lingering: after an answer with `Connection: close`, half-closed, discarding input;
- closed."""

import asyncio
import errno
import json
import logging

from coophash_keras.serving.http11 import (
    CONTINUE,
    CONTINUE_BYTES,
    END,
    NEED_DATA,
    FramingError,
    IncompleteRequest,
    RequestParser,
    response_bytes,
)

log = logging.getLogger("coophash.serving")

LINGER_S = 2.0  # after an error answer, how long unread request bytes are drained before closing
PAUSE_READING_BYTES = 256 * 1024  # buffered while answering, beyond which reading is paused

READING, ANSWERING, SENDING, LINGERING, CLOSED = range(5)


def error_body(message):
    return json.dumps({"error": message}).encode()  # the form of every error body


class RestConnection(asyncio.Protocol):
    """Serves one client's requests for a RestFrontend (`frontend`)."""

    def __init__(self, frontend):
        self.frontend = frontend
        self.transport = None
        self.peer = "?:?"
        self.state = READING
        self.parser = RequestParser(frontend.max_body_bytes)
        self.deadline = None
        self._request = None  # the request being answered
        self._pending = None  # its concurrent future, while the app works on it
        self._finish = None  # finish(future) -> the answer
        self._callback = None  # the _Wakeups callback that answers it (disarmed when cancelled)
        self._paused_reading = False
        self._write_paused = False
        self._close_after_send = False
        self._linger_timer = None
        self._in_read_requests = False  # _read_requests is on the stack: it goes on by itself

    # ------------------------------------------------------------------ transport callbacks
    def connection_made(self, transport):
        self.transport = transport
        host, port = (transport.get_extra_info("peername") or ("?", "?"))[:2]
        self.peer = f"{host}:{port}"
        frontend = self.frontend
        connections = frontend.connections
        if len(connections) >= frontend.max_connections:
            if not frontend.warned_full:  # once per episode, not once per refused client
                log.warning("%d REST connections open: refusing new ones until some close", len(connections))
                frontend.warned_full = True
            # 503 (UNAVAILABLE) tells a client to come back; it is written without waiting for the
            # client to take it, and the socket closed.
            body = error_body("Too many open connections; retry later")
            transport.write(response_bytes(503, "application/json", body, close=True))
            self.state = CLOSED
            transport.close()
            return
        frontend.warned_full = False
        connections.add(self)
        self.deadline = frontend.deadline_for(self._timed_out)
        self.deadline.set(frontend.read_timeout)

    def data_received(self, data):
        state = self.state
        if state == READING:
            self.parser.feed(data)
            self._guard(self._read_requests)
        elif state in (ANSWERING, SENDING):
            self.parser.feed(data)
            if not self._paused_reading and self.parser.buffered() > PAUSE_READING_BYTES:
                self._paused_reading = True
                self.transport.pause_reading()
        # LINGERING: discarded; CLOSED: nothing to do

    def eof_received(self):
        if self.state == LINGERING:
            self._close()
            return False
        self.parser.feed_eof()
        if self.state == READING:
            self._guard(self._read_requests)
        return True  # keep the transport open: a half-closed client may still take its answer

    def pause_writing(self):
        self._write_paused = True

    def resume_writing(self):
        self._write_paused = False
        if self.state == SENDING:
            self.deadline.clear()
            self._guard(self._sent)

    def connection_lost(self, exc):
        if exc is not None and self.state not in (CLOSED, LINGERING):  # a reset while lingering: expected
            log.debug("%s: client disconnected (%s)", self.peer, type(exc).__name__)
        self._shut()

    def shutdown(self):
        """The server stops: drop the request if it is still queued, close at once."""
        self._shut()
        self.transport.abort()

    # ------------------------------------------------------------------------- requests
    def _read_requests(self):
        """Frame and start answering what is buffered; called when bytes arrive or when the
        connection is free again."""
        parser = self.parser
        self._in_read_requests = True
        try:
            self._frame_and_answer(parser)
        finally:
            self._in_read_requests = False

    def _frame_and_answer(self, parser):
        while True:
            try:
                request = parser.next()
            except FramingError as exc:
                log.debug("%s: framing error, answered %d and closed: %s", self.peer, exc.status, exc.message)
                self._write(response_bytes(exc.status, "application/json", error_body(exc.message), close=True))
                self._linger()
                return
            except IncompleteRequest:
                log.debug("%s: client disconnected (%s)", self.peer, "IncompleteRequest")
                self._close()
                return
            if request is NEED_DATA:
                return
            if request is CONTINUE:
                self._write(CONTINUE_BYTES)
                continue
            if request is END:  # the client closed between requests
                self._close()
                return
            self.deadline.clear()
            self._answer(request)
            if self.state != READING:
                return

    def _answer(self, request):
        """Start answering: a small request that the app can answer from a merged batch
        (handle_nowait) is parsed here, on the event loop, and waits for its rows without a
        thread; everything else runs on a worker thread (see RestFrontend). Either way the answer
        is written by _respond on the loop, woken once per finished batch (_Wakeups)."""
        self.state = ANSWERING
        self._request = request
        frontend = self.frontend
        nowait = frontend.handle_nowait
        if nowait is not None and len(request.body) <= frontend.inline_max_bytes:
            out = nowait(request.method, request.target, request.body)
            if isinstance(out, tuple) and len(out) == 2:
                future, finish = out  # finish() answers a failed request's error too
                if future.done():
                    self._respond(finish(future))
                else:
                    self._wait(future, finish)
                return
            if out is not None:
                self._respond(out)
                return
        self._wait(frontend.pool.submit(frontend.app.handle, request.method, request.target, request.body), _result)

    def _wait(self, future, finish):
        """Answer with finish(future) once the app (a batch thread, a worker) has set `future`."""
        self._pending, self._finish = future, finish
        self._callback = self.frontend.wakeups.call_when_done(future, self._on_done)

    def _on_done(self):
        future, finish = self._pending, self._finish
        self._pending = self._finish = self._callback = None
        try:
            self._respond(finish(future))
        except Exception:
            self._failed()

    def _respond(self, answer):
        status, content_type, body = answer
        request, self._request = self._request, None
        self._close_after_send = not request.keep_alive
        self._write(
            response_bytes(status, content_type, body, close=self._close_after_send, head=request.method == "HEAD")
        )
        if self._write_paused:  # the client must take the answer within read_timeout
            self.state = SENDING
            self.deadline.set(self.frontend.read_timeout)
        else:
            self._sent()

    def _sent(self):
        if self._close_after_send:
            self._linger()
            return
        self.state = READING
        self.deadline.set(self.frontend.read_timeout)
        if self._paused_reading:
            self._paused_reading = False
            self.transport.resume_reading()
        if not self._in_read_requests:  # else the answer came at once, and its loop reads on
            self._read_requests()

    # ------------------------------------------------------------------------- endings
    def _write(self, data):
        if not self.transport.is_closing():
            self.transport.write(data)

    def _linger(self):
        """Half-close, then discard what the client still sends for a moment, so the answer is
        not lost to a TCP reset (closing with unread input resets the connection)."""
        self.state = LINGERING
        self.deadline.clear()
        transport = self.transport
        if self._paused_reading:
            self._paused_reading = False
            transport.resume_reading()
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError as exc:  # the client reset the connection first (ENOTCONN): nothing to drain
                if exc.errno not in (errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE):
                    log.debug("%s: half-close failed (%s)", self.peer, exc)
                self._close()
                return
        seconds = min(LINGER_S, self.frontend.read_timeout)
        self._linger_timer = asyncio.get_running_loop().call_later(seconds, self._close)

    def _close(self):
        """Close once the answer is written; a client that does not take it within read_timeout
        is cut off."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        if self.transport.get_write_buffer_size():
            self.deadline.set(self.frontend.read_timeout)
        self.transport.close()

    def _timed_out(self):
        if self.state != CLOSED:
            log.debug(
                "%s: no complete request or response within %.3g s; closed", self.peer, self.frontend.read_timeout
            )
        self.state = CLOSED
        self.transport.abort()

    def _shut(self):
        """Forget the connection: its timers, and its request if the app still has it (the
        batcher skips a cancelled future's answer)."""
        self.state = CLOSED
        self.frontend.connections.discard(self)
        if self.deadline is not None:
            self.deadline.close()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._pending is not None:
            self._callback.cancel()
            self._pending.cancel()
            self._pending = self._finish = self._callback = None

    def _guard(self, step):
        """Run a step of this connection; a bug of ours (an exception) closes this connection
        only, with the traceback logged, and the loop keeps serving the others."""
        try:
            step()
        except Exception:
            self._failed()

    def _failed(self):  # inside an except
        log.exception("%s: REST connection failed", self.peer)
        self._shut()
        self.transport.abort()


def _result(future):
    return future.result()
