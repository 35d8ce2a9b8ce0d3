"""examples/publish-api.lua does what its header, the README and the man page say: the curl call
they document (run as written, with the real curl) reaches the WebSocket clients of the topic;
401 without the secret, 400, 405, the health check; followers of a topic chat."""

import os
import re
import shlex
import shutil
import socket
import subprocess

import pytest

import wsclient
from harness import HOST, Server, source_dir

SECRET = "change-me"  # the one the documentation uses


def example():
    return os.path.join(source_dir(), "examples", "publish-api.lua")


def readme_curl():
    """The backend's curl call from README.md's block that starts the example."""
    with open(os.path.join(source_dir(), "README.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    block = next(b for b in blocks if "examples/publish-api.lua" in b)
    assert f"PUBLISH_SECRET={SECRET}" in block
    return next(line for line in block.splitlines() if line.startswith("curl "))


def man_curl():
    """The same call in the man page's EXAMPLES, as a reader sees it."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "check_docs", os.path.join(source_dir(), "tests", "docs", "check_docs.py"))
    cd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cd)
    with open(os.path.join(source_dir(), "man", "wsluad.1"), encoding="utf-8") as f:
        blocks = cd.example_blocks(cd.sections(f.read())["EXAMPLES"])
    block = next(b for b in blocks if b.startswith("curl "))
    return " ".join(block.replace("\\\n", " ").split())


def run_curl(line, port):
    if not shutil.which("curl"):
        pytest.fail("curl is not installed (scripts/setup --test installs it)")
    args = shlex.split(line.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    assert args[0] == "curl"
    return subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args[1:]],
                          capture_output=True, text=True, timeout=20)


@pytest.fixture(scope="module")
def api():
    with Server(example(), "--static", "none", env={"PUBLISH_SECRET": SECRET}) as s:
        yield s


def http(server, method, path, headers=(), body=b""):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: close",
             f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in headers]
    return server.http(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def test_documented_curl_reaches_the_topic(api):
    line = readme_curl()
    assert " ".join(line.split()) == man_curl(), "README and man page show different calls"
    a = api.connect("/topic/news")
    b = api.connect("/topic/news")
    other = api.connect("/topic/other")
    r = run_curl(line, api.port)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "2\n\n200", r.stdout  # the answer: how many it reached; then the status
    assert a.recv_message() == (wsclient.OP_TEXT, b"hello")
    assert b.recv_message() == (wsclient.OP_TEXT, b"hello")
    # the other topic got nothing: the first thing it gets is what is published to it
    status, _, body = http(api, "POST", "/publish?topic=other",
                           [("Authorization", f"Bearer {SECRET}")], b"marker")
    assert (status, body) == (200, b"1\n")
    assert other.recv_message() == (wsclient.OP_TEXT, b"marker")


def test_followers_of_a_topic_chat(api):
    a = api.connect("/topic/room1")
    b = api.connect("/topic/room1")
    a.send_text("hi from a")
    assert b.recv_message() == (wsclient.OP_TEXT, b"hi from a")
    b.send_text("hi from b")
    assert a.recv_message() == (wsclient.OP_TEXT, b"hi from b")  # not its own line first


def test_binary_body_published_as_binary(api):
    c = api.connect("/topic/bin")
    status, _, _ = http(api, "POST", "/publish?topic=bin", [("Authorization", f"bearer {SECRET}")],
                        b"\xff\xfe\x00")
    assert status == 200
    assert c.recv_message() == (wsclient.OP_BINARY, b"\xff\xfe\x00")


@pytest.mark.parametrize("method,path,headers,status", [
    ("POST", "/publish?topic=news", [], 401),
    ("POST", "/publish?topic=news", [("Authorization", "Bearer wrong-secret")], 401),
    ("POST", "/publish?topic=news", [("Authorization", f"Bearer {SECRET}x")], 401),
    ("POST", "/publish?topic=news", [("Authorization", f"Basic {SECRET}")], 401),
    ("POST", "/publish", [("Authorization", f"Bearer {SECRET}")], 400),
    ("POST", "/publish?topic=a/b", [("Authorization", f"Bearer {SECRET}")], 400),
    ("POST", "/publish?topic=" + "x" * 65, [("Authorization", f"Bearer {SECRET}")], 400),
    ("GET", "/publish?topic=news", [("Authorization", f"Bearer {SECRET}")], 405),
    ("GET", "/nothing", [], 404),
])
def test_refusals(api, method, path, headers, status):
    got, h, body = http(api, method, path, headers, b"x" if method == "POST" else b"")
    assert got == status, body
    if status == 401:
        assert h["www-authenticate"].startswith("Bearer")
    if status == 405:
        assert h["allow"] == "POST"


def test_health(api):
    assert http(api, "GET", "/health")[::2] == (200, b"ok\n")
    with socket.create_connection((HOST, api.port), timeout=wsclient.DEFAULT_TIMEOUT) as c:
        c.sendall(f"HEAD /health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := c.recv(4096):  # to the end: the server closes after the answer
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nContent-Length: 3\r\n" in head
    assert rest == b""  # the headers of GET's answer, without its body


def test_upgrade_outside_topics_refused(api):
    with pytest.raises(wsclient.HandshakeError) as e:
        api.connect("/elsewhere")
    assert e.value.status == 404


def test_without_a_secret_every_publish_is_refused():
    env = {"PUBLISH_SECRET": ""}
    with Server(example(), "--static", "none", env=env) as s:
        s.wait_for_log(r"WARN .*PUBLISH_SECRET is not set")
        status, _, _ = http(s, "POST", "/publish?topic=news", [("Authorization", "Bearer ")])
        assert status == 401
        assert http(s, "GET", "/health")[0] == 200
