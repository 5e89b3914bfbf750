"""HTTP/1.1 request framing for the REST front end: strict on purpose.

Where a request's length is missing, ambiguous or malformed (bad or duplicate Content-Length,
Content-Length with Transfer-Encoding, a bad chunk, an obs-folded or oversized header), we answer
with an error and close the connection: once framing is in doubt, the bytes that follow cannot be
trusted to start the next request, and treating them as one is how requests get smuggled.
Bodies may come with a Content-Length or chunked (as libevent, under TF-Serving, accepts)."""

import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from platform import python_version

MAX_LINE = 8 * 1024  # the request line and each header line
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
SERVER = f"coophash-serving Python/{python_version()}"  # what http.server sent before us

_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token
_TARGET = re.compile(rb"[^\x00-\x20\x7f]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?")


class FramingError(Exception):
    """The request cannot be framed: answer `status` with {"error": message}, then close."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Request:
    method: str
    target: str
    headers: dict  # lower-case name -> value (names that may repeat harmlessly keep the last one)
    body: bytes
    keep_alive: bool


def _body_length(fields, http10):
    """-> ("length", n), ("chunked", None) or ("none", None), refusing every ambiguous case."""
    lengths = [v for k, v in fields if k == "content-length"]
    codings = [v for k, v in fields if k == "transfer-encoding"]
    if codings:
        if lengths:
            raise FramingError(400, "Both Content-Length and Transfer-Encoding headers")
        names = [c.strip().lower() for c in ",".join(codings).split(",")]
        if http10 or names[-1] != "chunked":
            raise FramingError(400, "Transfer-Encoding must end in chunked (and needs HTTP/1.1)")
        if names != ["chunked"]:  # 400, not RFC 9112's "SHOULD 501": every framing error is a 4xx
            raise FramingError(400, f"Transfer-Encoding {', '.join(names)} is not supported (only chunked)")
        return "chunked", None
    if len(lengths) > 1:
        raise FramingError(400, "Duplicate Content-Length headers")
    if lengths:
        if not re.fullmatch(r"[0-9]{1,18}", lengths[0]):
            raise FramingError(400, f"Bad Content-Length header: {lengths[0][:40]}")
        return "length", int(lengths[0])
    return "none", None


def _too_large(what, limit):
    return FramingError(413, f"{what} exceeds the limit of {limit} bytes")


class IncompleteRequest(Exception):
    """The stream ended in the middle of a request (the client is gone): nothing to answer."""


NEED_DATA = "need data"  # RequestParser.next(): feed more bytes, then call again
CONTINUE = "100 continue"  # RequestParser.next(): write CONTINUE_BYTES, then call again
END = "end"  # RequestParser.next(): the client closed the stream cleanly between requests
CONTINUE_BYTES = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestParser:
    """Sans-IO request framing: feed() the bytes as they arrive (feed_eof() at the end of the
    stream), and next() says what is known so far: a complete Request, NEED_DATA, CONTINUE (the
    client expects `100 Continue` before it sends the body) or END. next() raises FramingError
    (answer it, then close) or IncompleteRequest (the stream ended mid-request).

    The rules are one sequential generator, _request(), that yields where it needs more bytes: it
    reads like a blocking parser, so a request fed whole and one fed a byte at a time meet the same
    checks in the same order. A line is limited as asyncio.StreamReader(limit=MAX_LINE) limited it
    before: more than MAX_LINE bytes before its LF, or more than MAX_LINE bytes buffered without
    one, is the caller's error status."""

    __slots__ = ("max_body_bytes", "_buf", "_pos", "_eof", "_steps")

    def __init__(self, max_body_bytes):
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._pos = 0  # where the unread bytes start
        self._eof = False
        self._steps = None  # the generator of the request being read

    def feed(self, data):
        self._buf += data

    def feed_eof(self):
        self._eof = True

    def buffered(self):
        """How many bytes are held that no request has used yet."""
        return len(self._buf) - self._pos

    def next(self):
        """-> a Request, NEED_DATA, CONTINUE or END (see the class)."""
        if self._steps is None:
            if self._pos == len(self._buf) and not self._eof:  # nothing to read yet (the usual case)
                return NEED_DATA
            self._steps = self._request()
        try:
            return next(self._steps)  # NEED_DATA or CONTINUE
        except StopIteration as done:
            self._steps = None
            del self._buf[: self._pos]  # the next request starts at 0: the buffer does not grow
            self._pos = 0
            return END if done.value is None else done.value

    # ------------------------------------------------------------ the rules, read sequentially
    def _take_line(self):
        """The next line without its CRLF if it is all buffered and within MAX_LINE, else None
        (then _line waits, or says why not). A bare LF is accepted; a CR elsewhere is not."""
        buf, start = self._buf, self._pos
        end = buf.find(b"\n", start)
        if end < 0 or end - start > MAX_LINE:
            return None
        self._pos = end + 1
        if end > start and buf[end - 1] == 13:  # CR
            end -= 1
        return buf[start:end]

    def _line(self, too_long_status, what):
        """One line without its CRLF (see _take_line)."""
        while True:
            line = self._take_line()
            if line is not None:
                return line
            buf, start = self._buf, self._pos
            if buf.find(b"\n", start) >= 0 or len(buf) - start > MAX_LINE:
                raise FramingError(too_long_status, f"{what} longer than {MAX_LINE} bytes")
            if self._eof:
                raise IncompleteRequest(len(buf) > start)  # args[0]: were some bytes read?
            yield NEED_DATA

    def _exactly(self, n):
        while len(self._buf) - self._pos < n:
            if self._eof:
                raise IncompleteRequest(True)
            yield NEED_DATA
        start = self._pos
        self._pos += n
        return bytes(self._buf[start : self._pos])

    def _header_block(self):
        """Header (or trailer) lines up to the empty line -> [(lower-case name, value)]."""
        fields, size = [], 0
        while True:
            line = self._take_line()  # the usual case, without a generator per line
            if line is None:
                line = yield from self._line(431, "a header line")
            if not line:
                return fields
            size += len(line) + 2
            if size > MAX_HEADER_BYTES or len(fields) >= MAX_HEADERS:
                raise FramingError(431, f"more than {MAX_HEADERS} headers or {MAX_HEADER_BYTES} bytes of headers")
            m = _HEADER.fullmatch(line)
            if not m:  # includes obs-fold (a leading space) and whitespace before the colon
                raise FramingError(400, "Malformed header line")
            fields.append((m.group(1).decode("ascii").lower(), m.group(2).decode("latin-1")))

    def _chunked_body(self, limit):
        parts, total = [], 0
        while True:
            m = _CHUNK_SIZE.fullmatch((yield from self._line(400, "a chunk size line")))
            if not m:
                raise FramingError(400, "Bad chunk size line")
            size = int(m.group(1), 16)
            if size == 0:
                yield from self._header_block()  # trailers: read, checked, ignored
                return b"".join(parts)
            total += size
            if total > limit:
                raise _too_large("Chunked request body", limit)
            parts.append((yield from self._exactly(size)))
            if (yield from self._exactly(2)) != b"\r\n":
                raise FramingError(400, "Chunk data not followed by CRLF")

    def _request(self):
        """The next request, or None at a clean end of stream between requests."""
        for _ in range(4):  # RFC 9112 2.2: ignore a few empty lines before a request line
            try:
                line = yield from self._line(414, "Request line")
            except IncompleteRequest as exc:
                if not exc.args[0]:
                    return None
                raise
            if line:
                break
        else:
            raise FramingError(400, "No request line")
        parts = line.split(b" ")
        if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
            raise FramingError(400, "Malformed request line")
        version = _VERSION.fullmatch(parts[2])
        if not version:
            raise FramingError(400, "Malformed request line")
        if version.group(1) != b"1":  # 400, not 505: every framing error is a 4xx
            raise FramingError(400, "Unsupported HTTP version (HTTP/1.0 and HTTP/1.1 only)")
        http10 = version.group(2) == b"0"
        fields = yield from self._header_block()
        headers = dict(fields)
        method = parts[0].decode("ascii")
        kind, length = _body_length(fields, http10)
        if kind == "none" and method == "POST":
            raise FramingError(400, "Missing Content-Length header")
        if kind == "length" and length > self.max_body_bytes:  # refused before the client sends it
            raise _too_large(f"Request body of {length} bytes", self.max_body_bytes)
        if kind != "none" and not http10 and headers.get("expect", "").lower() == "100-continue":
            yield CONTINUE
        if kind == "chunked":
            body = yield from self._chunked_body(self.max_body_bytes)
        else:
            body = (yield from self._exactly(length)) if length else b""
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "keep-alive" in tokens if http10 else "close" not in tokens
        return Request(method, parts[1].decode("latin-1"), headers, body, keep_alive)


_date_cache = [None, ""]  # [the second, its Date value]


def _date():
    """formatdate(usegmt=True), computed once per second: it has a resolution of a second, and
    costs ~5 us, as much as the rest of the response head."""
    now = time.time()
    second = int(now)
    if _date_cache[0] != second:
        _date_cache[1] = formatdate(now, usegmt=True)
        _date_cache[0] = second
    return _date_cache[1]


def response_bytes(status, content_type, body, close=False, head=False):
    """Status line and headers as http.server wrote them (same order), then the body."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:  # 499 (CANCELLED) has no standard phrase
        reason = ""
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Server: {SERVER}",
        f"Date: {_date()}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)
