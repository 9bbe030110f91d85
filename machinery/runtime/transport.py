"""Machinery's HTTP client: requests to services and webhook receivers over kept-alive connections.

A call to a service wants none of what a general HTTP client does for each request: no proxies, no
cookies, no redirects followed, no auth, no content decoding, no retries (the executor has its own).
So calls go straight through `http.client`, with one pool of kept-alive connections per thread: in
the profile of a loaded API process, requests and urllib3 cost about 170 µs of CPU a call on top of
`http.client`'s own work, which is a third of what Machinery adds to a three-step event.

What a caller gets: `post()` (a URL, a JSON body) and `send()` (any method, a target worked out
once, the whole header list, a body or none) answer a `Reply` (status, headers, a capped `read()`), or raises
`CallFailed` saying whether the time ran out (`timeout`) or the connection failed (`connection`). A
`guard.Deadline` around the call can cut the socket of a server that trickles its reply.
"""

from __future__ import annotations

import functools
import http.client
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
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            if connection.sock is None:
                connection.connect()  # within connect_timeout
            connection.sock.settimeout(read_timeout)  # then each wait for the service within read_timeout
            guard.watch(connection.sock)
            connection.endheaders(body)
            response = connection.getresponse()
        except TimeoutError:
            connection.close()
            raise CallFailed("no reply in time", "timeout") from None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
            # Closed without a reply: a kept-alive connection the service gave up on as it was
            # being reused (a race the idle check cannot see), or a service that hangs up.
            connection.close()
            raise _Stale() from error
        except (http.client.HTTPException, OSError) as error:
            connection.close()
            raise CallFailed(f"connection failed: {_reason(error)}") from None
        except ValueError as error:  # a header value http.client will not send (a newline in it, say)
            connection.close()
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
