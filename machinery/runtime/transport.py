"""Machinery's HTTP client: requests to services and webhook receivers over kept-alive connections.

A call to a service wants none of what a general HTTP client does for each request: no proxies, no
cookies, no redirects followed, no auth, no content decoding, no retries (the executor has its own).
So calls go straight through `http.client`, with one pool of kept-alive connections per thread: in
the profile of a loaded API process, requests and urllib3 cost about 170 µs of CPU a call on top of
`http.client`'s own work, which is a third of what Machinery adds to a three-step event. Of
`http.client`, only the connections and the reading of a reply's body are used: the request's head is
written here in one piece (checked as http.client checks it), and the reply's status line and headers
are read here (`_Response`), because http.client parses headers with the email package, about 17 µs a
reply where a split of each line takes 2; in a map of many small calls that was a seventh of the
API process's time.

What a caller gets: `post()` (a URL, a JSON body) and `send()` (any method, a target worked out
once, the whole header list, a body or none) answer a `Reply` (status, headers, a capped `read()`), or raises
`CallFailed` saying whether the time ran out (`timeout`) or the connection failed (`connection`). A
`guard.Deadline` around the call can cut the socket of a server that trickles its reply.
"""

from __future__ import annotations

import functools
import http.client
import re
import select
import socket
import ssl
import threading
from collections import OrderedDict
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from requests.utils import requote_uri

from machinery import __version__, guard

USER_AGENT = f"machinery/{__version__}"
# What every request carries unless a service's own headers say otherwise.
DEFAULT_HEADERS = (("User-Agent", USER_AGENT), ("Accept", "application/json"), ("Accept-Encoding", "identity"))
READ_CHUNK = 1024 * 1024  # a reply of unknown length is read this much at a time
MAX_HOSTS_PER_THREAD = 64  # kept-alive connections a thread holds, one per host, least recently used dropped
MAX_LINE = 65536  # the longest status or header line taken, and at most MAX_HEADERS header lines (as http.client)
MAX_HEADERS = 100
JOIN_BODY_BYTES = 64 * 1024  # a body up to this size goes out in the head's write (one system call, no Nagle stall)
# What a request's head may hold (RFC 9110): a method and a header name are tokens; a header value and
# the request target hold no line break, NUL or other control character (a tab is allowed in a value).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")


class CallFailed(Exception):
    """No reply: `kind` is "timeout" (the time ran out) or "connection" (anything else went wrong);
    not `retryable` when trying again cannot help (an address or a header that cannot be sent)."""

    def __init__(self, message: str, kind: str = "connection", retryable: bool = True):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retryable = retryable


@functools.lru_cache(maxsize=1024)
def target(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path and query) of an http(s) URL as sent: the host in IDNA, the path
    percent-quoted where it must be; worked out once per URL."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL with a host")
        host = parts.hostname if parts.hostname.isascii() else parts.hostname.encode("idna").decode("ascii")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except (UnicodeError, ValueError) as error:
        raise CallFailed(f"cannot call {url[:200]!r}: {error}", retryable=False) from None
    path = requote_uri((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    return parts.scheme, host, port, path


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """Certificates checked against certifi's bundle when it is there (as requests does), else the system's."""
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class _Stale(Exception):
    """A connection closed with no reply; `__cause__` says how."""


class _Response(http.client.HTTPResponse):
    """http.client's reply, its status line and headers read here (see the module's docstring); its
    body is read by http.client as ever, by Content-Length, chunks or the connection's close."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        version, status, reason = self._status_line()
        while status == 100:  # an interim 100 Continue: its headers skipped, the reply follows
            self._header_lines()
            version, status, reason = self._status_line()
        self.code = self.status = status
        self.reason = reason
        self.version = 10 if version == "HTTP/1.0" else 11
        self.headers = self.msg = self._header_lines()
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding) and encoding.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._closes()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                pass
            else:
                if self.length < 0:
                    self.length = None
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # no way to tell where the body ends but the close

    def _line(self, what: str) -> bytes:
        line = self.fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong(what)
        return line

    def _status_line(self) -> tuple[str, int, str]:
        line = self._line("status line")
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        parts = line.decode("iso-8859-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise http.client.BadStatusLine(line.decode("iso-8859-1").strip()[:200] or repr(line))
        if not parts[0].startswith("HTTP/1."):
            raise http.client.UnknownProtocol(parts[0][:20])
        if len(parts[1]) != 3 or not parts[1].isdigit() or parts[1] < "100":
            raise http.client.BadStatusLine(line.decode("iso-8859-1").strip()[:200])
        return parts[0], int(parts[1]), parts[2].strip() if len(parts) == 3 else ""

    def _header_lines(self) -> http.client.HTTPMessage:
        """The header lines up to the blank one, as http.client's HTTPMessage (case-insensitive get,
        items); a folded line (RFC 9112's obsolete line folding) joins the one before with a space,
        and a line that is not `name: value` is left out."""
        pairs: list[list[str]] = []
        for _ in range(MAX_HEADERS + 1):
            line = self._line("header line")
            if line in (b"\r\n", b"\n", b""):
                break
            text = line.decode("iso-8859-1").rstrip("\r\n")
            if text[:1] in (" ", "\t"):
                if pairs:
                    folded = text.strip(" \t")
                    pairs[-1][1] = f"{pairs[-1][1]} {folded}".strip()
                continue
            name, colon, value = text.partition(":")
            if colon and name and name == name.strip():
                pairs.append([name, value.strip(" \t")])
        else:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        message = http.client.HTTPMessage()
        for name, value in pairs:
            message[name] = value
        return message

    def _closes(self) -> bool:
        """Whether the server closes the connection after this reply (RFC 9112, 9.3)."""
        connection = (self.headers.get("connection") or "").lower()
        if self.version == 11:
            return "close" in connection
        return not ("keep-alive" in connection or self.headers.get("keep-alive"))


@functools.lru_cache(maxsize=4096)
def _checked_name(name: str) -> bytes:
    """A header name as sent, checked once: a token."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid header name {name[:100]!r}")
    return name.encode("ascii")


@functools.lru_cache(maxsize=1024)
def _request_line(method: str, host: str, port: int, default_port: int) -> tuple[bytes, bytes]:
    """The start of a request's head for a method and origin: the method and, after the target, the
    protocol and the Host header (the port only when it is not the scheme's)."""
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"invalid method {method[:20]!r}")
    shown = f"[{host}]" if ":" in host else host
    if port != default_port:
        shown = f"{shown}:{port}"
    return f"{method} ".encode("ascii"), f" HTTP/1.1\r\nHost: {shown}\r\n".encode("ascii")


def request_head(method: str, origin: tuple[str, str, int], path: str, headers: Iterable[tuple[str, str]],
                 body: bytes | None) -> bytes:
    """A request's line and headers, ending in the blank line; ValueError for what cannot be sent
    (a control character in the target or a header value, a name that is not a token), naming
    the header but never showing its value, which may hold a secret."""
    scheme, host, port = origin
    if _BAD_TARGET.search(path) or not path.isascii():
        raise ValueError("the request target holds a space, a control character or a non-ASCII one")
    start, protocol = _request_line(method, host, port, 443 if scheme == "https" else 80)
    parts = [start, path.encode("ascii"), protocol]
    for name, value in headers:
        value = value if isinstance(value, str) else str(value)
        if _BAD_VALUE.search(value):
            raise ValueError(f"the value of header {name[:100]!r} holds a line break or a control character")
        parts += (_checked_name(name), b": ", value.encode("latin-1"), b"\r\n")
    if body is not None:
        parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class Reply:
    """A service's reply: status and headers read, the body read on demand, at most `cap` bytes."""

    def __init__(self, response: http.client.HTTPResponse, done):
        self._response = response
        self._done = done
        self.status = response.status
        self.headers = response.headers  # case-insensitive .get()

    def read(self, cap: int) -> bytes:
        """Up to cap + 1 bytes of the body (so a caller can tell one over the cap)."""
        try:
            raw = self._read(cap + 1)
        except TimeoutError:
            self.close()
            raise CallFailed("the reply body did not finish in time", "timeout") from None
        except (http.client.HTTPException, OSError, ValueError) as error:
            self.close()
            raise CallFailed(f"the reply was cut off: {_reason(error)}") from None
        if len(raw) > cap:
            self.close()
        elif self._response.length:  # http.client hands back a body shorter than its Content-Length as is
            self.close()
            raise CallFailed(f"the reply was cut off: {self._response.length} bytes of the body never came")
        else:
            self._finish()
        return raw

    def _read(self, most: int) -> bytes | bytearray:
        """At most `most` bytes of the body, into one buffer. A body of known length (within `most`)
        is read at once, into a buffer of its size; any other in READ_CHUNK pieces appended to one
        bytearray, so that a cap of 64 MiB neither allocates 64 MiB for a small reply nor copies a
        large one piece by piece."""
        response = self._response
        length = response.length
        if length is not None and length < most:
            return response.read()
        buffer = bytearray()
        while len(buffer) < most:
            piece = response.read(min(READ_CHUNK, most - len(buffer)))
            if not piece:
                break
            buffer += piece
        return buffer

    def close(self) -> None:
        """Done with the reply, whatever is left unread: the connection is not reused."""
        self._release(reusable=False)

    def _finish(self) -> None:
        self._release(reusable=self._response.isclosed() and not self._response.will_close)

    def _release(self, reusable: bool) -> None:
        done, self._done = self._done, None
        if done is not None:
            done(reusable)


class Pool:
    """One thread's kept-alive connections, one per (scheme, host, port); not shared between threads."""

    def __init__(self):
        self._idle: OrderedDict[tuple, http.client.HTTPConnection] = OrderedDict()

    def post(self, url: str, body: bytes, headers: Mapping[str, str], connect_timeout: float,
             read_timeout: float) -> Reply:
        scheme, host, port, path = target(url)
        return self.send("POST", (scheme, host, port), path, body,
                         (*DEFAULT_HEADERS, *headers.items()), connect_timeout, read_timeout)

    def send(self, method: str, origin: tuple[str, str, int], path: str, body: bytes | None,
             headers: Iterable[tuple[str, str]], connect_timeout: float, read_timeout: float) -> Reply:
        """`method` to `path` (percent-encoded, with its query) at `origin` (scheme, host, port), with
        exactly `headers` (Content-Length is added for a body); a `body` of None sends none."""
        connection = self._take(origin)
        if connection is not None:
            try:
                return self._exchange(origin, connection, method, path, body, headers, read_timeout)
            except _Stale:
                pass  # closed by the service as it was reused: once more, on a new connection
        scheme, host, port = origin
        options = {"context": _tls()} if scheme == "https" else {}
        kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        connection = kind(host, port, timeout=connect_timeout, **options)
        try:
            return self._exchange(origin, connection, method, path, body, headers, read_timeout)
        except _Stale as stale:
            raise CallFailed(f"connection failed: {_reason(stale.__cause__)}") from None

    def _exchange(self, key: tuple, connection: http.client.HTTPConnection, method: str, path: str,
                  body: bytes | None, headers: Iterable[tuple[str, str]], read_timeout: float) -> Reply:
        """Send the request on a connection and read the reply's status and headers."""
        response = None
        try:
            head = request_head(method, key, path, headers, body)  # before connecting: a bad header fails first
            if connection.sock is None:
                connection.connect()  # within connect_timeout
            sock = connection.sock
            sock.settimeout(read_timeout)  # then each wait for the service within read_timeout
            guard.watch(sock)
            if body is None:
                sock.sendall(head)
            elif len(body) <= JOIN_BODY_BYTES:
                sock.sendall(head + body)
            else:
                sock.sendall(head)
                sock.sendall(body)
            response = _Response(sock, method=method)
            response.begin()
        except TimeoutError:
            _abandon(connection, response)
            raise CallFailed("no reply in time", "timeout") from None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
            # Closed without a reply: a kept-alive connection the service gave up on as it was
            # being reused (a race the idle check cannot see), or a service that hangs up.
            _abandon(connection, response)
            raise _Stale() from error
        except (http.client.HTTPException, OSError) as error:
            _abandon(connection, response)
            raise CallFailed(f"connection failed: {_reason(error)}") from None
        except ValueError as error:  # a header that cannot be sent (a newline in its value, say)
            _abandon(connection, response)
            raise CallFailed(f"request not sent: {error}", retryable=False) from None

        def done(reusable: bool) -> None:
            if reusable:
                self._keep(key, connection)
            else:
                connection.close()
        return Reply(response, done)

    def _take(self, key: tuple) -> http.client.HTTPConnection | None:
        """The thread's idle connection to that host, unless the server has closed it meanwhile."""
        connection = self._idle.pop(key, None)
        if connection is not None and _dropped(connection.sock):
            connection.close()
            return None
        return connection

    def _keep(self, key: tuple, connection: http.client.HTTPConnection) -> None:
        self._idle[key] = connection
        if len(self._idle) > MAX_HOSTS_PER_THREAD:
            _, oldest = self._idle.popitem(last=False)
            oldest.close()

    def close(self) -> None:
        while self._idle:
            self._idle.popitem()[1].close()

    __del__ = close  # a thread's pool goes with the thread: its sockets are closed, not left to the collector


def _abandon(connection: http.client.HTTPConnection, response: http.client.HTTPResponse | None) -> None:
    """Close a connection given up on mid-exchange, with the reply begun on it: the reply reads the
    socket through a file of its own, which keeps the socket open after the connection closes it."""
    if response is not None:
        response.close()
    connection.close()


def _dropped(sock: socket.socket | None) -> bool:
    """Whether an idle kept-alive socket is readable: the server closed it (or sent what it should not)."""
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _reason(error: Exception) -> str:
    """A short reason for a failed call."""
    if isinstance(error, http.client.RemoteDisconnected):
        return "the service closed the connection without replying"
    if isinstance(error, socket.gaierror):
        return f"the host name did not resolve ({error.strerror})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return (str(error) or type(error).__name__)[:200]


_local = threading.local()


def thread_pool() -> Pool:
    """This thread's pool, kept for the thread's life."""
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = Pool()
    return pool
