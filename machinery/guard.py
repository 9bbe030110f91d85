"""Guards at the edges: which hosts Machinery may call, how long a call may last, what may be stored (no Flask)."""

from __future__ import annotations

import fnmatch
import functools
import heapq
import ipaddress
import itertools
import math
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

from urllib3.util import parse_url

from machinery.exceptions import InvalidData

SETTING = "MACHINERY_ALLOWED_HOSTS"
NAME_PATTERN = re.compile(r"^[a-z0-9*?\[\]!._\-]+$")
UNSAFE_URL = re.compile(r"[\\\s\x00-\x1f\x7f]")
INT64 = (-(2 ** 63), 2 ** 63 - 1)
# A stored value (an event's data, a context key, a reply): deep enough for any value of a type, which
# nests 16 levels at most; a definition is a request body, allowed deeper (api/body.py).
MAX_DEPTH = 32
MAX_PROBLEMS = 10


class ForbiddenHost(InvalidData):
    """A URL's host is not in MACHINERY_ALLOWED_HOSTS (or the URL is not one we can read safely)."""


@dataclass(frozen=True)
class HostPolicy:
    """The hosts Machinery may call: name patterns (fnmatch) and IP networks. Empty: every host."""

    names: tuple[str, ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def allows_all(self) -> bool:
        return not self.names and not self.networks

    def __str__(self) -> str:
        return ",".join([*self.names, *(str(network) for network in self.networks)]) or "(every host)"

    def admits(self, host: str) -> bool:
        """Whether a host (a name or an IP literal, as a URL holds it) may be called."""
        if self.allows_all:
            return True
        address = _ip(host)
        if address is not None:
            if any(address in network for network in self.networks if network.version == address.version):
                return True
            return any(fnmatch.fnmatchcase(str(address), pattern) for pattern in self.names)
        if _legacy_ip(host):
            # "127.1", "2130706433", "0x7f.1": the resolver reads these as IP addresses; a name
            # pattern must not let them through, and no network pattern names them canonically.
            return False
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.names)


def parse_policy(text: str) -> HostPolicy:
    """Read MACHINERY_ALLOWED_HOSTS: comma-separated names (`*.internal`), IPs and CIDRs (`10.0.0.0/8`).

    Raises ValueError naming a bad pattern.
    """
    names: list[str] = []
    networks: list[Any] = []
    for raw in text.split(","):
        pattern = raw.strip().lower().rstrip(".")
        if not pattern:
            continue
        if pattern.startswith("[") and pattern.endswith("]"):
            pattern = pattern[1:-1]
        try:
            networks.append(ipaddress.ip_network(pattern, strict=False))
            continue
        except ValueError:
            if "/" in pattern or ":" in pattern:
                raise ValueError(f"{raw.strip()!r} is neither a host name pattern nor an IP network") from None
        if not NAME_PATTERN.match(pattern):
            raise ValueError(f"{raw.strip()!r} is not a host name pattern (letters, digits, '.', '-', '_', "
                             "and the wildcards '*', '?', '[...]')")
        names.append(pattern)
    return HostPolicy(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(networks)))


@functools.lru_cache(maxsize=64)
def _cached_policy(text: str) -> HostPolicy:
    return parse_policy(text)


def policy(value: Any) -> HostPolicy:
    """The policy a config value stands for: a HostPolicy, a pattern string, a list of patterns, or None."""
    if isinstance(value, HostPolicy):
        return value
    if value is None:
        return HostPolicy()
    if isinstance(value, str):
        return _cached_policy(value)
    if isinstance(value, Iterable):
        return _cached_policy(",".join(str(item) for item in value))
    raise TypeError(f"ALLOWED_HOSTS must be a string of patterns, not {type(value).__name__}")


def url_host(url: str) -> str:
    """The host a URL names, lower case and without a trailing dot; ValueError when it cannot be told.

    The host is read twice, by the standard library (which Machinery connects with) and by urllib3
    (which most clients and proxies in front of a service follow); a URL they read differently is
    refused rather than guessed at.
    """
    if not isinstance(url, str) or UNSAFE_URL.search(url):
        raise ValueError("the URL holds a backslash, a space or a control character")
    try:
        ours = urlsplit(url).hostname
        theirs = parse_url(url).host
    except ValueError:
        raise ValueError("the URL cannot be parsed") from None
    if not ours or not theirs:
        raise ValueError("the URL names no host")
    theirs = theirs.strip("[]").lower()
    if ours.lower() != theirs:
        raise ValueError("the URL's host is ambiguous")
    return ours.lower().rstrip(".")


def refusal(url: str, allowed: Any) -> str | None:
    """Why a URL may not be called under the ALLOWED_HOSTS value `allowed`; None when it may.

    Asked before every call to a service: the answer for a URL and a policy, both immutable, is
    worked out once (two URL parsers and the patterns cost about 9 µs; the cache, well under one)."""
    rules = policy(allowed)
    if rules.allows_all:
        return None
    if type(url) is not str:
        return _refusal(url, rules)
    return _cached_refusal(url, rules)


@functools.lru_cache(maxsize=4096)
def _cached_refusal(url: str, rules: HostPolicy) -> str | None:
    return _refusal(url, rules)


def _refusal(url: Any, rules: HostPolicy) -> str | None:
    try:
        host = url_host(url)
    except ValueError as error:
        return f"{error}; only a plain http(s) URL to a host in {SETTING} may be called"
    if rules.admits(host):
        return None
    return f"host {host!r} is not in {SETTING} ({rules})"


def check_url(url: str, allowed: Any, field: str) -> None:
    """Raise ForbiddenHost (a 422) naming the host and the setting when `url` may not be called."""
    problem = refusal(url, allowed)
    if problem:
        raise ForbiddenHost(f"{field}: {problem}", errors={field: [problem]})


def _ip(host: str):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _legacy_ip(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True


# -- how long a call may last ----------------------------------------------------------------


class Deadline:
    """A whole call's time limit, enforced whatever the server does.

    A socket's read timeout bounds each wait for a byte, not the call: a server that trickles a
    byte a second, in its headers or its body, would hold a call for ever. Inside `with Deadline(s)`,
    the transport hands each call's socket to `watch()`, and at the deadline the watchdog shuts that
    socket down, which ends the send or read with an error; `fired` then tells the caller it was the
    deadline.
    """

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.fired = False
        self._done = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Deadline:
        _calls.deadline = self
        _WATCHDOG.add(self)
        return self

    def __exit__(self, *_exc) -> None:
        _calls.deadline = None
        with self._lock:
            self._done, self._sock = True, None

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.fired and sock is not None:
                _shut(sock)

    def fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            if self._sock is not None:
                _shut(self._sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Watchdog:
    """One daemon thread firing deadlines as they fall due (a thread per call would cost more).

    Every call leaves its deadline in the heap, ended or not, until it falls due; under load that is
    one a millisecond. So the thread fires deadlines up to SLACK_S late, all those due at once, rather
    than waking for each: a deadline is seconds long, and a hundredth more does not matter.
    """

    SLACK_S = 0.02

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="machinery-deadlines", daemon=True)
                self._thread.start()
            # The thread sleeps until the earliest deadline: wake it only when this one is earlier.
            if self._heap[0][2] is deadline:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                now = time.monotonic()
                wait = self._heap[0][0] - now
                if wait > 0:
                    self._cond.wait(wait + self.SLACK_S)
                    continue
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for deadline in due:
                deadline.fire()


_WATCHDOG = _Watchdog()
_calls = threading.local()


def watch(sock: socket.socket | None) -> None:
    """Put a call's socket under the Deadline the current thread is inside, if any: at the deadline it
    is shut down, which ends a send or a read that would otherwise go on."""
    deadline = getattr(_calls, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


# -- what may be stored ----------------------------------------------------------------------


def storable_problems(value: Any, path: str = "") -> list[str]:
    """What in a JSON value MongoDB would refuse or the API could not answer back, as 'path: problem'.

    Keys must not start with '$', hold '.' or NUL (MongoDB reads them as operators and paths);
    whole numbers must fit in 64 bits, numbers must be finite, strings valid Unicode, and nesting
    at most MAX_DEPTH deep. The same rules hold on the embedded store, so both behave alike.
    """
    kind = type(value)  # a lone string or number, as most outputs are, needs no walk when it is fine
    if kind is str and (value.isascii() or valid_unicode(value)) or kind is bool or value is None or (
            kind is int and INT64[0] <= value <= INT64[1]) or (kind is float and math.isfinite(value)):
        return []
    problems: list[str] = []
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack and len(problems) < MAX_PROBLEMS:
        item, where, depth = stack.pop()
        label = where or "(top)"
        if isinstance(item, (dict, list)) and depth > MAX_DEPTH:
            problems.append(f"{label}: nested more than {MAX_DEPTH} levels deep")
            continue
        if isinstance(item, dict):
            for key, child in item.items():
                name = f"{where}.{key}" if where else str(key)
                problem = key_problem(key)
                if problem:
                    problems.append(f"{_printable(name)}: {problem}")
                    continue
                stack.append((child, name, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]", depth + 1) for index, child in enumerate(item))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64[0] <= item <= INT64[1]:
                problems.append(f"{label}: whole number out of the 64-bit range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append(f"{label}: not a finite number")
        elif isinstance(item, str):
            if not valid_unicode(item):
                problems.append(f"{_printable(label)}: not valid Unicode (a lone surrogate)")
        else:
            problems.append(f"{label}: {type(item).__name__} is not a JSON value")
    return problems


def key_problem(key: Any) -> str | None:
    """Why a key cannot be stored as a MongoDB field name; None when it can."""
    if not isinstance(key, str):
        return "keys must be strings"
    if key.startswith("$"):
        return "keys must not start with '$'"
    if "." in key:
        return "keys must not contain '.'"
    if "\x00" in key:
        return "keys must not contain NUL"
    if not valid_unicode(key):
        return "keys must be valid Unicode"
    return None


def check_storable(value: Any, name: str) -> None:
    """Raise InvalidData (a 422) listing what in `value` cannot be stored."""
    problems = storable_problems(value)
    if problems:
        raise InvalidData(f"{name} cannot be stored: " + "; ".join(problems[:5])
                          + (" ..." if len(problems) > 5 else ""), errors={name: problems})


def valid_unicode(text: str) -> bool:
    """Whether a string is Unicode text (no lone surrogate such as \\ud800, which UTF-8 cannot hold)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 120 else text[:117] + "..."
