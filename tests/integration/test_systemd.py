"""systemd: with NOTIFY_SOCKET set, wsluad sends READY=1 once listening, RELOADING=1 (with
MONOTONIC_USEC) and READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM, to a path or an
abstract socket, always from the main process (under --workers the supervisor, once every worker
listens or has reloaded). The socket is a Python datagram socket in a temporary directory, as
systemd's own is; SO_PASSCRED tells which process sent each message. The installed unit file
passes `systemd-analyze verify`."""

import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid

import pytest

from harness import DEFAULT_TIMEOUT, SCRIPTS, Server
from wsclient import OP_TEXT

STARTED = r"\[supervisor\] worker (\d+) started \(pid (\d+)\)"


class NotifySocket:
    """systemd's end of NOTIFY_SOCKET: a unix datagram socket, at a path or (address starting
    with '@') in the abstract namespace."""

    def __init__(self, address):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def recv(self, timeout=DEFAULT_TIMEOUT):
        """The next message: ({field: value}, the sender's pid)."""
        if not self.pending(timeout):
            raise TimeoutError(f"no notification within {timeout}s")
        creds = struct.calcsize("iII")
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
        pid = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:creds])[0]
        text = data.decode()
        assert text and not text.endswith("\n\n"), repr(text)
        return dict(line.split("=", 1) for line in text.split("\n")), pid

    def pending(self, timeout=0.0):
        return bool(select.select([self.sock], [], [], timeout)[0])

    def close(self):
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify(request, tmp_path):
    if request.param == "path":
        address = str(tmp_path / "notify")
    else:
        address = f"@wsluad-test-{uuid.uuid4().hex}"
    ns = NotifySocket(address)
    yield ns
    ns.close()


def monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_ready_reload_stopping(notify):
    with Server("notify.lua", env={"NOTIFY_SOCKET": notify.address}) as s:
        msg, pid = notify.recv()
        assert msg == {"READY": "1", "STATUS": f"listening on 127.0.0.1:{s.port}"}
        assert pid == s.proc.pid
        # Taken out of the environment before the script ran: its children cannot notify.
        s.wait_for_log(r"NOTIFY_SOCKET in the environment: nil$")

        before = monotonic_usec()
        s.signal(signal.SIGHUP)
        msg, pid = notify.recv()
        after = monotonic_usec()
        assert msg.keys() == {"RELOADING", "MONOTONIC_USEC"} and msg["RELOADING"] == "1"
        assert before <= int(msg["MONOTONIC_USEC"]) <= after and pid == s.proc.pid
        msg, pid = notify.recv()
        assert msg == {"READY": "1", "STATUS": "reloaded"} and pid == s.proc.pid
        s.wait_for_log(r"reloaded ")
        c = s.connect()
        c.send_text("still here")
        assert c.recv_message() == (OP_TEXT, b"still here")
        assert not notify.pending()
        assert s.stop() == 0
    msg, pid = notify.recv()
    assert msg == {"STOPPING": "1"} and pid == s.proc.pid
    assert not notify.pending()


def test_a_failed_reload_says_so(tmp_path):
    ns = NotifySocket(str(tmp_path / "notify"))
    script = tmp_path / "notify.lua"
    shutil.copy(os.path.join(SCRIPTS, "notify.lua"), script)
    with Server(str(script), env={"NOTIFY_SOCKET": ns.address}) as s:
        assert ns.recv()[0]["READY"] == "1"
        with open(script, "a") as f:
            f.write("\nthis is not Lua\n")
        s.signal(signal.SIGHUP)
        assert ns.recv()[0]["RELOADING"] == "1"
        # The old code goes on serving: the service is ready again, and says why nothing changed.
        assert ns.recv()[0] == {"READY": "1", "STATUS": "reload failed: old code running"}
        assert s.stop() == 0
    assert ns.recv()[0] == {"STOPPING": "1"}


@pytest.mark.parametrize("value,complaint", [
    ("vsock:2:1234", r"NOTIFY_SOCKET 'vsock:2:1234' is not a socket wsluad can notify"),
    ("relative/path", r"NOTIFY_SOCKET 'relative/path' is not a socket wsluad can notify"),
    ("@", r"NOTIFY_SOCKET '@' is not a socket wsluad can notify"),
    (None, r"cannot notify systemd \(READY=1\): No such file or directory"),
])
def test_a_bad_notify_socket_is_logged_and_ignored(tmp_path, value, complaint):
    value = value or str(tmp_path / "nobody-listens-here")
    with Server("notify.lua", env={"NOTIFY_SOCKET": value}) as s:
        s.wait_for_log(complaint)
        c = s.connect()
        c.send_text("serving anyway")
        assert c.recv_message() == (OP_TEXT, b"serving anyway")
        assert s.stop() == 0


# ---- --workers: the supervisor is the main process ------------------------------------------

def start_workers(tmp_path, redis, ns, hold):
    return Server("notify.lua", "--workers", "2", "--redis", redis.url, "-v",
                  "--handler-timeout", "0",
                  env={"NOTIFY_SOCKET": ns.address, "HOLD_DIR": str(hold)})


def test_workers_ready_once_all_listen_and_reloaded_once_all_reload(tmp_path, redis_server):
    ns = NotifySocket(str(tmp_path / "notify"))
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "start").touch()  # the worker that takes it holds its start
    with start_workers(tmp_path, redis_server, ns, hold) as s:
        held = int(s.wait_for_log(r"\[w(\d)\] .*holding the start").group(1))
        s.wait_for_log(rf"\[supervisor\] worker {3 - held} listening")
        # The supervisor has heard from one worker of two: systemd must go on waiting.
        assert not ns.pending(0.5), "READY=1 before every worker listens"
        (hold / "release-start").touch()
        msg, pid = ns.recv()
        assert msg == {"READY": "1", "STATUS": "2 workers listening"} and pid == s.proc.pid
        # Sent after both workers said they listen, and their lines come before their report.
        assert len(s.wait_for_logs(r"\[w\d\] .*listening on", 2)) == 2
        s.wait_for_log(r"\[supervisor\] all 2 workers listening")
        # No worker has NOTIFY_SOCKET (systemd would refuse their messages, NotifyAccess=main).
        assert len(s.wait_for_logs(r"\[w\d\] .*NOTIFY_SOCKET in the environment: nil", 2)) == 2

        (hold / "reload").touch()  # one worker holds its reload
        mark = s.mark()
        s.signal(signal.SIGHUP)
        msg, pid = ns.recv()
        assert msg["RELOADING"] == "1" and "MONOTONIC_USEC" in msg and pid == s.proc.pid
        held = int(s.wait_for_log(r"\[w(\d)\] .*holding the reload", after=mark).group(1))
        s.wait_for_log(rf"\[supervisor\] worker {3 - held} reloaded", after=mark)
        assert not ns.pending(0.5), "READY=1 before every worker reloaded"
        (hold / "release-reload").touch()
        msg, pid = ns.recv()
        assert msg == {"READY": "1", "STATUS": "2 workers, reloaded"} and pid == s.proc.pid
        assert len(s.wait_for_logs(r"\[w\d\] .*reloaded /", 2, after=mark)) == 2
        assert s.stop() == 0
    msg, pid = ns.recv()
    assert msg == {"STOPPING": "1"} and pid == s.proc.pid
    assert not ns.pending()


def test_a_worker_dying_mid_reload_does_not_hold_up_ready(tmp_path, redis_server):
    ns = NotifySocket(str(tmp_path / "notify"))
    hold = tmp_path / "hold"
    hold.mkdir()
    with start_workers(tmp_path, redis_server, ns, hold) as s:
        assert ns.recv()[0]["READY"] == "1"
        pids = {int(m.group(1)): int(m.group(2)) for m in s.find_logs(STARTED)}
        (hold / "reload").touch()
        mark = s.mark()
        s.signal(signal.SIGHUP)
        assert ns.recv()[0]["RELOADING"] == "1"
        held = int(s.wait_for_log(r"\[w(\d)\] .*holding the reload", after=mark).group(1))
        s.wait_for_log(rf"\[supervisor\] worker {3 - held} reloaded", after=mark)
        assert not ns.pending(0.3)
        os.kill(pids[held], signal.SIGKILL)  # its replacement starts with the new code anyway
        msg, pid = ns.recv()
        assert msg == {"READY": "1", "STATUS": "2 workers, reloaded"} and pid == s.proc.pid
        # The replacement comes up; systemd has had its READY=1 and hears nothing more.
        s.wait_for_log(rf"\[supervisor\] worker {held} listening", after=mark)
        assert not ns.pending(0.3)
        assert s.stop() == 0
    assert ns.recv()[0] == {"STOPPING": "1"}
    assert not ns.pending()


def test_workers_say_when_a_reload_failed(tmp_path, redis_server):
    ns = NotifySocket(str(tmp_path / "notify"))
    script = tmp_path / "notify.lua"
    shutil.copy(os.path.join(SCRIPTS, "notify.lua"), script)
    with Server(str(script), "--workers", "2", "--redis", redis_server.url,
                env={"NOTIFY_SOCKET": ns.address}) as s:
        assert ns.recv()[0]["READY"] == "1"
        with open(script, "a") as f:
            f.write("\nthis is not Lua\n")
        mark = s.mark()
        s.signal(signal.SIGHUP)
        assert ns.recv()[0]["RELOADING"] == "1"
        assert len(s.wait_for_logs(r"\[w\d\] .*reload of .* failed", 2, after=mark)) == 2
        # As without --workers: ready again, and STATUS says the old code still runs.
        msg, pid = ns.recv()
        assert msg == {"READY": "1", "STATUS": "2 workers, reload failed in 2: old code running"}
        assert pid == s.proc.pid
        s.wait_for_log(r"\[supervisor\] the reload failed in 2 of 2 workers", after=mark)
        assert not s.find_logs(r"every worker has reloaded")
        assert s.stop() == 0
    assert ns.recv()[0] == {"STOPPING": "1"}


# ---- the unit file ----------------------------------------------------------------------------

def systemd_analyze():
    p = shutil.which("systemd-analyze")
    if not p:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; scripts/setup "
                    "--test installs it)")
    return p


def verify(unit, man):
    """systemd-analyze verify: (exit status, what it printed). It runs `man` for Documentation=."""
    r = subprocess.run([systemd_analyze(), "verify", str(unit)],
                       env={**os.environ, "MANPATH": str(man)}, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    return r.returncode, r.stdout


def test_unit_file_is_installed_and_verifies(prefix):
    unit = prefix / "lib/systemd/system/wsluad.service"
    text = unit.read_text()
    lines = text.splitlines()
    # The unit names the binary under the prefix the install used.
    assert f"ExecStart={prefix}/bin/wsluad $WSLUAD_ARGS" in lines
    for want in ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "KillMode=mixed",
                 "Restart=on-failure", "LimitNOFILE=1048576", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "DynamicUser=yes",
                 "CapabilityBoundingSet=", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                 "SystemCallFilter=@system-service"]:
        assert want in lines, want
    status, out = verify(unit, prefix / "share/man")
    assert status == 0 and out == "", out


def test_verify_really_checks(prefix, tmp_path):
    """The check above would catch a mistake: a misspelt key, a binary that is not there."""
    text = (prefix / "lib/systemd/system/wsluad.service").read_text()
    bad = tmp_path / "wsluad.service"
    bad.write_text(text.replace("KillMode=mixed", "KillMod=mixed"))
    status, out = verify(bad, prefix / "share/man")
    assert "Unknown key" in out and "KillMod" in out, out
    bad.write_text(text.replace(f"{prefix}/bin/wsluad", f"{prefix}/bin/no-such-wsluad"))
    status, out = verify(bad, prefix / "share/man")
    assert status != 0 and "no-such-wsluad" in out, out


def test_unit_hardening_exposure(prefix):
    r = subprocess.run([systemd_analyze(), "security", "--offline=yes",
                        str(prefix / "lib/systemd/system/wsluad.service")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    m = re.search(r"Overall exposure level for wsluad\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout
    # 0 is a locked-down unit, 10 an unprotected one; systemd calls below 2 "OK".
    assert float(m.group(1)) <= 2.0, r.stdout
