"""The request head Machinery's client writes and the reply head it reads, byte for byte."""

from __future__ import annotations

import http.client
import io

import pytest

from machinery.runtime.transport import MAX_HEADERS, _Response, request_head


class _Socket:
    """What http.client's reply reads from: a socket's makefile over fixed bytes."""

    def __init__(self, data: bytes):
        self.data = data

    def makefile(self, mode):
        return io.BytesIO(self.data)


def reply(data: bytes, method: str = "POST") -> _Response:
    response = _Response(_Socket(data), method=method)
    response.begin()
    return response


def test_a_head_carries_the_host_the_headers_and_the_body_length():
    head = request_head("POST", ("http", "127.0.0.1", 8080), "/s0?a=1",
                        [("Content-Type", "application/json"), ("X-Step", "2")], b'{"m": 1}')
    assert head == (b"POST /s0?a=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
                    b"X-Step: 2\r\nContent-Length: 8\r\n\r\n")


def test_the_scheme_s_own_port_is_left_out_of_host_and_an_ipv6_host_is_bracketed():
    assert b"\r\nHost: example.com\r\n" in request_head("GET", ("https", "example.com", 443), "/", [], None)
    assert b"\r\nHost: [::1]:8080\r\n" in request_head("GET", ("http", "::1", 8080), "/", [], None)
    assert b"Content-Length" not in request_head("GET", ("http", "h", 80), "/", [], None)


@pytest.mark.parametrize("name, value", [("X-Bad", "s3cret\r\nInjected: 1"), ("X-Bad", "s3cret\nb"),
                                         ("X-Bad", "s3cret\0"), ("Bad Name", "s3cret"), ("Bad:Name", "s3cret"),
                                         ("", "s3cret")])
def test_a_header_that_would_change_the_request_is_refused_without_showing_its_value(name, value):
    with pytest.raises(ValueError) as refused:
        request_head("POST", ("http", "h", 80), "/", [(name, value)], b"")
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("path", ["/a b", "/a\r\nX: 1", "/é"])
def test_a_target_with_a_space_a_control_or_a_non_ascii_character_is_refused(path):
    with pytest.raises(ValueError):
        request_head("GET", ("http", "h", 80), path, [], None)


def test_a_tab_in_a_header_value_is_sent_as_it_is():
    assert b"X-A: a\tb\r\n" in request_head("GET", ("http", "h", 80), "/", [("X-A", "a\tb")], None)


def test_a_reply_head_gives_status_reason_headers_and_length():
    response = reply(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                     b"X-Many: 1\r\nx-many: 2\r\n\r\n{}")
    assert (response.status, response.reason, response.length, response.will_close) == (201, "Created", 2, False)
    assert response.headers.get("content-type") == "application/json"
    assert response.headers.get_all("X-MANY") == ["1", "2"]
    assert response.read() == b"{}"


def test_a_chunked_reply_is_read_by_its_chunks():
    response = reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert response.chunked and response.length is None and not response.will_close
    assert response.read() == b"{}"


def test_an_interim_100_continue_is_skipped():
    response = reply(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert response.status == 200 and response.headers.get("x-interim") is None


def test_a_folded_header_line_joins_the_one_before():
    response = reply(b"HTTP/1.1 200 OK\r\nX-Folded: one\r\n  two\r\nContent-Length: 0\r\n\r\n")
    assert response.headers.get("x-folded") == "one two"


@pytest.mark.parametrize("head, closes", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\n\r\nbody until the close", True),  # no length: only the close ends the body
])
def test_whether_the_connection_closes_after_the_reply(head, closes):
    assert reply(head).will_close is closes


def test_a_reply_with_no_body_by_its_status_or_to_a_head_request_has_length_zero():
    assert reply(b"HTTP/1.1 204 No Content\r\n\r\n").length == 0
    assert reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", method="HEAD").length == 0


@pytest.mark.parametrize("data, error", [
    (b"", http.client.RemoteDisconnected),
    (b"SMTP ready\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/1.1 2000 OK\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/1.1 099 Low\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/2 200 OK\r\n\r\n", http.client.UnknownProtocol),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n", http.client.LineTooLong),
    (b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n", http.client.HTTPException),
])
def test_a_reply_head_that_is_not_http_1_or_passes_the_limits_is_an_error(data, error):
    with pytest.raises(error):
        reply(data)
