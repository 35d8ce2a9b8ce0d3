"""on_upgrade (scripts/upgrade.lua): refusal with a status and body and no on_open, the default
403, subprotocol negotiation, errors in the hook (500 + traceback), req fields, and req.data
becoming conn.data."""

import pytest

from harness import Server
from wsclient import HandshakeError, OP_TEXT


@pytest.fixture(scope="module")
def server():
    with Server("upgrade.lua") as s:
        yield s


def refused(server, path, headers=None):
    with pytest.raises(HandshakeError) as e:
        server.connect(path, headers)
    return e.value


def no_on_open_for(server, path):
    """Prove no on_open ran for `path`: a later accepted connection's on_open is logged, and
    no on_open for path came before it (the refused request was answered before)."""
    probe = server.connect("/true")
    port = probe.sock.getsockname()[1]
    server.wait_for_log(rf"on_open path=/true remote=127\.0\.0\.1:{port}$")
    assert not server.find_logs(rf"on_open path={path} ")
    probe.close_handshake()


def test_refusal_with_status_and_body(server):
    e = refused(server, "/refuse?why=because")
    assert e.status == 401
    assert e.body == b"go away, why=because"
    no_on_open_for(server, "/refuse")


def test_refusal_with_status_only(server):
    e = refused(server, "/refuse-status")
    assert e.status == 429
    no_on_open_for(server, "/refuse-status")


def test_refusal_default_403(server):
    e = refused(server, "/refuse-default")
    assert e.status == 403
    no_on_open_for(server, "/refuse-default")


@pytest.mark.parametrize("path,message", [
    ("/refuse-float", r"on_upgrade: the refusal status must be an integer from 400 to 599, got 451\.5"),
    ("/refuse-huge", r"on_upgrade: refusal status 1099511628179 is not 4xx or 5xx"),
    ("/refuse-body-table", r"on_upgrade: the refusal body must be a string, got table"),
])
def test_refusal_with_wrong_values_says_which(server, path, message):
    # A status that is no integer gave "bad argument #-2 to '?' (number has no integer
    # representation)", a body that is no string "bad argument #-1 to '?'", and a status past
    # 2^31 was printed cut to an int: none named on_upgrade's return value.
    mark = server.mark()
    e = refused(server, path)
    assert e.status == 500
    server.wait_for_log(r"ERROR Lua error in on_upgrade: " + message + "$", after=mark)
    no_on_open_for(server, path)


@pytest.mark.parametrize("path", ["/nothing", "/true"])
def test_accept(server, path):
    mark = server.mark()
    c = server.connect(path)
    server.wait_for_log(rf"on_upgrade path={path}$", after=mark)
    port = c.sock.getsockname()[1]
    server.wait_for_log(rf"on_open path={path} remote=127\.0\.0\.1:{port}$")
    c.send_frame(OP_TEXT, b"protocol")
    assert c.recv_text() == "nil"
    assert "sec-websocket-protocol" not in c.headers


def test_subprotocol_negotiated(server):
    c = server.connect("/proto", headers={"Sec-WebSocket-Protocol": "chat.v1, chat.v2, x"})
    assert c.headers.get("sec-websocket-protocol") == "chat.v2"
    c.send_frame(OP_TEXT, b"protocol")
    assert c.recv_text() == "chat.v2"


def test_no_protocol_selected_when_hook_returns_nothing(server):
    c = server.connect("/nothing", headers={"Sec-WebSocket-Protocol": "chat.v1"})
    assert "sec-websocket-protocol" not in c.headers


def test_protocol_not_offered_500(server):
    mark = server.mark()
    e = refused(server, "/proto-unoffered", headers={"Sec-WebSocket-Protocol": "chat.v1"})
    assert e.status == 500
    server.wait_for_log(r"(ERROR|WARN).*never-offered", after=mark)
    no_on_open_for(server, "/proto-unoffered")


def test_protocol_selected_but_none_offered_500(server):
    mark = server.mark()
    e = refused(server, "/proto")
    assert e.status == 500
    server.wait_for_log(r"(ERROR|WARN).*chat\.v2", after=mark)


def test_error_in_hook_500_with_traceback(server):
    mark = server.mark()
    e = refused(server, "/error")
    assert e.status == 500
    i, _ = server.wait_for_line(r"ERROR.*upgrade exploded", after=mark)
    server.wait_for_log(r"stack traceback:", after=i)
    no_on_open_for(server, "/error")


def test_req_data_becomes_conn_data(server):
    c = server.connect("/data")
    c.send_frame(OP_TEXT, b"data")
    assert c.recv_text() == "alice:42"


def test_req_data_that_is_not_a_table_is_an_error(server):
    # It would be lost: conn.data is a table. nil is "no data".
    mark = server.mark()
    e = refused(server, "/data-not-table")
    assert e.status == 500
    server.wait_for_log(r"ERROR.*on_upgrade: req\.data must be a table \(it becomes "
                        r"conn\.data\), got string", after=mark)
    no_on_open_for(server, "/data-not-table")
    c = server.connect("/data-nil")
    c.send_frame(OP_TEXT, b"data")
    assert c.recv_text() == "nil:nil"


def test_req_fields(server):
    c = server.connect("/req?x=1&y=2", headers={
        "X-Custom": "Custom Value",
        "Origin": "http://example.test",
        "Sec-WebSocket-Protocol": "p1, p2",
    })
    port = c.sock.getsockname()[1]
    c.send_frame(OP_TEXT, b"report")
    fields = dict(kv.split("=", 1) for kv in c.recv_text().split("|"))
    assert fields == {
        "method": "GET",
        "path": "/req",
        "query": "x=1&y=2",
        "x-custom": "Custom Value",
        "key": "true",
        "upper": "",
        "remote": f"127.0.0.1:{port}",
        "origin": "http://example.test",
        "protocols": "p1,p2",
        "data": "table:nil",
    }
