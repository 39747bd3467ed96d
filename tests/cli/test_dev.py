"""``trio-durable dev``: restarts on a change to a .py file, logs requests, serves HTTPS.

Real processes and real sockets on 127.0.0.1. Every wait is bounded by
``helpers.WAIT`` (generous), never by how fast the machine is.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .helpers import WAIT, Command, environment, one_line_error, run

pytestmark = pytest.mark.slow

APP = """\
import attrs
import trio_durable as td


@attrs.define(eq=False)
class Unused(td.DurableObject):
    pass


async def worker(request, runtime):
    return td.Response.text({text!r})


app = td.App(worker=worker, objects={{"unused": Unused}})
"""
SERVING = r"cli: serving hello:app on (https?://[0-9.:]+) "


def write_app(directory: Path, text: str) -> None:
    (directory / "hello.py").write_text(APP.format(text=text))


def get(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=WAIT, context=context) as response:
        body: bytes = response.read()
    return body.decode()


def test_restarts_when_a_py_file_changes_and_logs_requests(tmp_path: Path) -> None:
    write_app(tmp_path, "version 1")
    dev = Command("dev", "hello:app", "--port", "0", cwd=tmp_path)
    try:
        base = dev.wait_for(SERVING).group(1)
        assert get(base + "/?token=secret") == "version 1"
        line = dev.wait_for(r"trio_durable\.access").string
        assert '"GET /" 200' in line and "secret" not in line, line

        write_app(tmp_path, "version 2")
        dev.wait_for(r"hello\.py changed; restarting")
        assert dev.wait_for(SERVING).group(1) == base, "the same port after a restart"
        assert get(base + "/") == "version 2", "the module was imported anew"

        assert dev.stop(signal.SIGTERM) == 0, dev.lines
    finally:
        dev.kill()
    stops = [line for line in dev.lines if "stopped serving hello:app" in line]
    assert len(stops) == 2, f"each child stopped cleanly: {dev.lines}"


def test_a_broken_save_waits_for_the_fix(tmp_path: Path) -> None:
    write_app(tmp_path, "version 1")
    dev = Command("dev", "hello:app", "--port", "0", cwd=tmp_path)
    try:
        base = dev.wait_for(SERVING).group(1)
        (tmp_path / "hello.py").write_text("def broken(:\n")
        dev.wait_for(r"trio-durable: error: importing 'hello' failed: SyntaxError")
        dev.wait_for(r"the app exited with status 2; it starts again on the next change")
        with pytest.raises(urllib.error.URLError):
            get(base + "/")
        write_app(tmp_path, "fixed")
        dev.wait_for(SERVING)
        assert get(base + "/") == "fixed"
        assert dev.stop(signal.SIGINT) == 0, dev.lines
    finally:
        dev.kill()


def test_https_with_a_ca_made_for_the_run(tmp_path: Path) -> None:
    write_app(tmp_path, "over TLS")
    dev = Command("dev", "hello:app", "--port", "0", "--https", cwd=tmp_path)
    try:
        ca_file = dev.wait_for(r"clients must trust the CA in (\S+\.pem)").group(1)
        base = dev.wait_for(SERVING).group(1)
        assert base.startswith("https://127.0.0.1:"), base
        trusting = ssl.create_default_context(cafile=ca_file)
        assert get(base + "/", trusting) == "over TLS"
        by_name = base.replace("127.0.0.1", "localhost")
        assert get(by_name + "/", trusting) == "over TLS", "the certificate names localhost"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            get(base + "/", ssl.create_default_context())
        assert dev.stop() == 0, dev.lines
    finally:
        dev.kill()
    assert not Path(ca_file).exists(), "the throwaway CA is removed at exit"


def test_bad_arguments_are_refused_before_anything_starts(tmp_path: Path) -> None:
    write_app(tmp_path, "unused")
    line = one_line_error(run("dev", "hello.py:app", cwd=tmp_path))
    assert "hello:app" in line, line
    (tmp_path / "file").write_text("")
    line = one_line_error(run("dev", "hello:app", "--data-dir", "file", cwd=tmp_path))
    assert "is a file, not a directory" in line, line
    line = one_line_error(run("dev", "helo:app", cwd=tmp_path))
    assert f"no module named 'helo' (searched from {tmp_path})" in line, line
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(run("dev", "hello:app", "--port", str(port), cwd=tmp_path))
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in line, line


def test_without_watchfiles_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['watchfiles'] = None\n"
        "from trio_durable._cli import main\n"
        "sys.exit(main(['dev', 'hello:app']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    line = one_line_error(result)
    assert "needs the watchfiles package: python -m pip install 'trio_durable[dev]'" in line
