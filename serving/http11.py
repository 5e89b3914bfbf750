"""HTTP/1.1 request framing for the REST front end: strict on purpose.

Where a request's length is missing, ambiguous or malformed (bad or duplicate Content-Length,
Content-Length with Transfer-Encoding, a bad chunk, an obs-folded or oversized header), we answer
with an error and close the connection: once framing is in doubt, the bytes that follow cannot be
trusted to start the next request, and treating them as one is how requests get smuggled.
Bodies may come with a Content-Length or chunked (as libevent, under TF-Serving, accepts)."""

import asyncio
import re
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


async def _line(reader, too_long_status, what):
    """One line without its CRLF (a bare LF is accepted; a CR elsewhere is not)."""
    try:
        line = await reader.readuntil(b"\n")  # IncompleteReadError at end of stream
    except asyncio.LimitOverrunError:
        raise FramingError(too_long_status, f"{what} longer than {MAX_LINE} bytes") from None
    return line[:-2] if line.endswith(b"\r\n") else line[:-1]


async def _header_block(reader):
    """Header (or trailer) lines up to the empty line -> [(lower-case name, value)]."""
    fields, size = [], 0
    while True:
        line = await _line(reader, 431, "a header line")
        if not line:
            return fields
        size += len(line) + 2
        if size > MAX_HEADER_BYTES or len(fields) >= MAX_HEADERS:
            raise FramingError(431, f"more than {MAX_HEADERS} headers or {MAX_HEADER_BYTES} bytes of headers")
        m = _HEADER.fullmatch(line)
        if not m:  # includes obs-fold (a leading space) and whitespace before the colon
            raise FramingError(400, "Malformed header line")
        fields.append((m.group(1).decode("ascii").lower(), m.group(2).decode("latin-1")))


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


async def _chunked_body(reader, limit):
    parts, total = [], 0
    while True:
        m = _CHUNK_SIZE.fullmatch(await _line(reader, 400, "a chunk size line"))
        if not m:
            raise FramingError(400, "Bad chunk size line")
        size = int(m.group(1), 16)
        if size == 0:
            await _header_block(reader)  # trailers: read, checked, ignored
            return b"".join(parts)
        total += size
        if total > limit:
            raise _too_large("Chunked request body", limit)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise FramingError(400, "Chunk data not followed by CRLF")


async def read_request(reader, writer, max_body_bytes):
    """The next request on the connection, or None at a clean end of stream between requests.
    Raises FramingError (answer, then close) or IncompleteReadError / ConnectionError (gone)."""
    for _ in range(4):  # RFC 9112 2.2: ignore a few empty lines before a request line
        if reader.at_eof():
            return None
        try:
            line = await _line(reader, 414, "Request line")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
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
    fields = await _header_block(reader)
    headers = dict(fields)
    method = parts[0].decode("ascii")
    kind, length = _body_length(fields, http10)
    if kind == "none" and method == "POST":
        raise FramingError(400, "Missing Content-Length header")
    if kind == "length" and length > max_body_bytes:
        raise _too_large(f"Request body of {length} bytes", max_body_bytes)  # refused before the client sends it
    if kind != "none" and not http10 and headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if kind == "chunked":
        body = await _chunked_body(reader, max_body_bytes)
    else:
        body = await reader.readexactly(length) if length else b""
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in tokens if http10 else "close" not in tokens
    return Request(method, parts[1].decode("latin-1"), headers, body, keep_alive)


def response_bytes(status, content_type, body, close=False, head=False):
    """Status line and headers as http.server wrote them (same order), then the body."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:  # 499 (CANCELLED) has no standard phrase
        reason = ""
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Server: {SERVER}",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)
