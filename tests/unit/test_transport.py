"""The HTTP client against real sockets on 127.0.0.1: kept-alive connections, dropped ones, cut and
capped bodies, chunked replies, addresses it cannot call, and a Deadline cutting a silent server."""

from __future__ import annotations

import contextlib
import time

import pytest

from machinery import guard
from machinery.runtime.transport import CallFailed, Pool
from machinery.serving import free_port
from tests.support.fakes import HostileServer

HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def server(request):
    hostile = HostileServer(request.param).start()
    yield hostile
    hostile.stop()


@pytest.fixture
def pool():
    connections = Pool()
    yield connections
    connections.close()


def post(pool, url, cap=1000, timeout=2.0):
    reply = pool.post(url, b'{"message": "hi"}', HEADERS, connect_timeout=timeout, read_timeout=timeout)
    return reply.status, reply.read(cap)


@pytest.mark.parametrize("server", ["keep-alive", "chunked"], indirect=True)
def test_calls_to_one_host_share_one_kept_alive_connection(server, pool):
    answers = [post(pool, server.url) for _ in range(5)]
    assert answers == [(200, b'{"message": "ok"}')] * 5
    assert server.requests == 5 and server.connections == 1


@pytest.mark.parametrize("server", ["close-after-reply"], indirect=True)
def test_a_connection_the_server_closed_while_idle_is_replaced_not_reused(server, pool):
    assert post(pool, server.url) == (200, b'{"message": "ok"}')
    time.sleep(0.2)  # the server closes its end meanwhile, as one whose keep-alive timeout passed would
    assert post(pool, server.url) == (200, b'{"message": "ok"}')
    assert server.requests == 2 and server.connections == 2


@pytest.mark.parametrize("server", ["hang-up-when-reused"], indirect=True)
def test_a_kept_alive_connection_closed_as_it_is_reused_is_tried_once_more_on_a_new_one(server, pool):
    assert post(pool, server.url) == (200, b'{"message": "ok"}')
    assert post(pool, server.url) == (200, b'{"message": "ok"}')
    assert server.connections == 2 and server.requests == 3


@pytest.mark.parametrize("server", ["hang-up"], indirect=True)
def test_a_new_connection_closed_without_a_reply_fails_at_once(server, pool):
    with pytest.raises(CallFailed, match="closed the connection without replying"):
        post(pool, server.url)
    assert server.connections == 1


@pytest.mark.parametrize("server", ["short-body"], indirect=True)
def test_a_body_shorter_than_its_content_length_is_cut_off_not_taken(server, pool):
    reply = pool.post(server.url, b"{}", HEADERS, connect_timeout=2, read_timeout=2)
    with pytest.raises(CallFailed, match="cut off") as failure:
        reply.read(1000)
    assert failure.value.kind == "connection" and failure.value.retryable


@pytest.mark.parametrize("server", ["keep-alive"], indirect=True)
def test_a_body_over_the_cap_reads_one_byte_more_and_drops_the_connection(server, pool):
    assert post(pool, server.url, cap=4) == (200, b'{"mes')
    assert post(pool, server.url) == (200, b'{"message": "ok"}')
    assert server.connections == 2


@pytest.mark.parametrize("url", ["ftp://example.test/", "http:///nohost", "http://example.test:99999/"])
def test_an_address_that_cannot_be_called_fails_for_good(pool, url):
    with pytest.raises(CallFailed) as failure:
        post(pool, url)
    assert not failure.value.retryable


def test_a_header_that_cannot_be_sent_fails_for_good(pool):
    with pytest.raises(CallFailed, match="not sent") as failure:
        pool.post(f"http://127.0.0.1:{free_port()}/", b"{}", {"X-Bad": "a\r\nInjected: 1"},
                  connect_timeout=1, read_timeout=1)
    assert not failure.value.retryable


def test_a_closed_port_is_a_connection_failure_worth_retrying(pool):
    with pytest.raises(CallFailed, match="refused") as failure:
        post(pool, f"http://127.0.0.1:{free_port()}/")
    assert failure.value.kind == "connection" and failure.value.retryable


@pytest.mark.parametrize("server", ["silent"], indirect=True)
def test_a_read_timeout_is_a_timeout(server, pool):
    started = time.monotonic()
    with pytest.raises(CallFailed) as failure:
        post(pool, server.url, timeout=0.3)
    assert failure.value.kind == "timeout" and time.monotonic() - started < 2


@pytest.mark.parametrize("server", ["trickle-headers"], indirect=True)
def test_a_deadline_cuts_a_server_that_trickles_past_every_read_timeout(server, pool):
    started = time.monotonic()
    with guard.Deadline(0.5) as cutoff, contextlib.suppress(CallFailed):
        post(pool, server.url, timeout=5)  # cut, the headers may look ended: `fired` tells the caller
    assert cutoff.fired and time.monotonic() - started < 3
