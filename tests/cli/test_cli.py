"""The ``trio-durable`` command: serve, stop cleanly, refuse bad arguments in one line."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import trio_durable
from tests.chat.helpers import ROOT, cli_server, stop

from .helpers import WAIT, Command, environment


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_durable", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def test_console_script_is_declared() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts")
    (entry,) = [ep for ep in scripts if ep.name == "trio-durable"]
    assert entry.value == "trio_durable._cli:main", entry.value


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "dev", "new"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_stops_on_signal_with_exit_0(tmp_path: Path, signum: int) -> None:
    with cli_server(tmp_path / "data") as (process, url):
        status, body = get(url + "/")
        assert status == 200 and b"<title>Chat" in body
        code, rest = stop(process, signum)
    assert code == 0, (code, rest)
    lines = rest.strip().splitlines()
    assert "stopped serving examples.chat:app on " + url in lines[-1], rest
    assert "Traceback" not in rest, rest
    assert (tmp_path / "data" / "trio_durable.sqlite3").exists()


def test_log_level_warning_is_quiet(tmp_path: Path) -> None:
    args = ["serve", "examples.chat:app", "--port", "0", "--data-dir", str(tmp_path)]
    with subprocess.Popen(
        [sys.executable, "-m", "trio_durable", *args, "--log-level", "warning"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            # Nothing to wait for in the log: give it time to start, then stop it.
            with pytest.raises(subprocess.TimeoutExpired):
                process.wait(2)
            code, rest = stop(process)
        finally:
            process.kill()
    assert (code, rest) == (0, ""), (code, rest)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trio-durable: error: "), lines[0]
    return lines[0]


def test_unknown_module_exits_2_in_one_line(tmp_path: Path) -> None:
    line = one_line_error(run("serve", "no_such_module:app", "--data-dir", str(tmp_path)))
    assert "no module named 'no_such_module'" in line, line


def test_missing_attribute_exits_2(tmp_path: Path) -> None:
    line = one_line_error(run("serve", "examples.chat:nope", "--data-dir", str(tmp_path)))
    assert "has no attribute 'nope'" in line, line


def test_not_an_app_exits_2(tmp_path: Path) -> None:
    line = one_line_error(run("serve", "examples.chat:worker", "--data-dir", str(tmp_path)))
    assert "not a trio_durable.App" in line, line


def test_malformed_app_spec_exits_2(tmp_path: Path) -> None:
    line = one_line_error(run("serve", "examples.chat", "--data-dir", str(tmp_path)))
    assert "MODULE:ATTRIBUTE" in line, line


def test_module_is_imported_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("import os\n\nraise RuntimeError('boom at import')\n")
    line = one_line_error(run("serve", "broken_app:app", cwd=tmp_path))
    assert "RuntimeError: boom at import at broken_app.py:3" in line, line
    assert "--log-level debug shows the traceback" in line, line


def test_import_error_shows_the_traceback_at_debug_level(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("def f():\n    raise RuntimeError('boom')\n\nf()\n")
    result = run("serve", "broken_app:app", "--log-level", "debug", cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert "Traceback (most recent call last):" in lines, result.stderr
    assert "    raise RuntimeError('boom')" in lines, result.stderr
    assert lines[-1].startswith("trio-durable: error: importing 'broken_app' failed"), lines[-1]
    assert lines[-1].endswith("RuntimeError: boom at broken_app.py:2"), (
        "no hint to use the level already in use"
    )


def test_syntax_error_in_the_app_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("def f(:\n")
    line = one_line_error(run("serve", "broken_app:app", cwd=tmp_path))
    assert "SyntaxError" in line and "broken_app.py" in line, line


def test_a_file_name_for_the_module_gets_a_hint_and_is_not_imported(tmp_path: Path) -> None:
    (tmp_path / "whiteboard.py").write_text("raise SystemExit('imported')\n")
    line = one_line_error(run("serve", "whiteboard.py:app", cwd=tmp_path))
    assert "give the module name without .py: whiteboard:app" in line, line


def test_a_path_for_the_module_gets_a_hint() -> None:
    line = one_line_error(run("serve", "examples/chat:app"))
    assert "give a module name with dots: examples.chat:app" in line, line


def test_version_is_the_package_version() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    expected = f"trio-durable {trio_durable.__version__}"
    assert result.stdout.strip() == expected, result.stdout
    assert trio_durable.__version__ == importlib.metadata.version("trio_durable"), (
        "pyproject.toml and trio_durable.__version__ agree"
    )


def test_console_script_prints_the_version_too() -> None:
    script = Path(sys.executable).parent / "trio-durable"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (not installed here)")
    result = subprocess.run(
        [str(script), "--version"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"trio-durable {trio_durable.__version__}", result.stdout


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "examples.chat:app", "--port", str(port), "--data-dir", str(tmp_path))
    line = one_line_error(result)
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in line, line


def test_data_dir_under_a_file_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line_error(
        run("serve", "examples.chat:app", "--port", "0", "--data-dir", str(blocker / "data"))
    )
    assert f"cannot be created: {str(blocker)!r} is a file" in line, line


def test_data_dir_that_is_a_file_exits_2(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("")
    line = one_line_error(
        run("serve", "examples.chat:app", "--port", "0", "--data-dir", str(not_a_dir))
    )
    assert line == f"trio-durable: error: --data-dir {str(not_a_dir)!r} is a file, not a directory"


def test_bad_option_exits_2_in_one_line() -> None:
    one_line_error(run("serve", "examples.chat:app", "--port", "eighty"))
    one_line_error(run("serve", "examples.chat:app", "--port", "70000"))
    one_line_error(run("launch"))


def test_sigterm_with_a_websocket_open_closes_it_1001_and_exits_0(tmp_path: Path) -> None:
    with cli_server(tmp_path) as (process, url):
        room = url.replace("http://", "ws://") + "/api/room/lobby/websocket"
        with connect(room, proxy=None) as client:
            client.send(json.dumps({"name": "ada"}))
            assert json.loads(client.recv(5)) == {"joined": "ada"}
            assert json.loads(client.recv(5)) == {"ready": True}
            code, rest = stop(process)
            with pytest.raises(ConnectionClosed):
                client.recv(5)
            assert client.close_code == 1001, client.close_code
    assert code == 0, (code, rest)
    assert "Traceback" not in rest, rest


def test_readme_quick_start_is_two_commands_run_and_test() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quick_start, re.DOTALL)
    assert len(commands) == 2, commands
    run_command, test_command = commands
    assert run_command == (
        "python -m pip install -e . && python -m trio_durable serve examples.chat:app"
        " --host 127.0.0.1 --port 8787 --data-dir ./data"
    ), "no console script: it is not on PATH in a virtualenv that is not activated"
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"test_command='{test_command}'" in ci, "the README's test command is what CI runs"
    assert "\npython .ci/quick_start.py\n" in ci, "CI runs the README's first command"


def test_ci_quick_start_reads_the_readme_first_command() -> None:
    spec = importlib.util.spec_from_file_location("quick_start", ROOT / ".ci" / "quick_start.py")
    assert spec is not None and spec.loader is not None
    quick_start = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quick_start)
    readme = (ROOT / "README.md").read_text()
    assert quick_start.first_command(readme).startswith("python -m pip install -e . && "), (
        "the CI check runs what the README shows"
    )
    assert quick_start.README_PORT in quick_start.first_command(readme)


def test_storage_that_cannot_be_opened_exits_2(tmp_path: Path) -> None:
    (tmp_path / "trio_durable.sqlite3").mkdir()  # a directory where the database goes
    line = one_line_error(
        run("serve", "examples.chat:app", "--port", "0", "--data-dir", str(tmp_path))
    )
    assert "cannot open the storage" in line, line


def test_serve_logs_each_request_and_upgrade_and_the_lifecycle_at_info(tmp_path: Path) -> None:
    server = Command(
        "serve", "examples.chat:app", "--port", "0", "--data-dir", str(tmp_path), cwd=ROOT
    )
    try:
        base = server.wait_for(r"serving examples\.chat:app on (http://\S+) ").group(1)
        assert get(base + "/?token=secret")[0] == 200
        line = server.wait_for(r"trio_durable\.access").string
        assert '"GET /" 200' in line and "secret" not in line, line
        room = base.replace("http://", "ws://") + "/api/room/lobby/websocket"
        with connect(room, proxy=None, open_timeout=30):
            upgrade = server.wait_for(r"trio_durable\.access").string
            assert '"GET /api/room/lobby/websocket" 101' in upgrade, upgrade
            # The room was activated by the upgrade's fetch, before the 101 was logged.
            lifecycle = [line for line in server.lines if "trio_durable.lifecycle" in line]
            assert lifecycle and lifecycle[-1].endswith("activated rooms:lobby"), server.lines
        assert server.stop() == 0, server.lines
    finally:
        server.kill()


def test_serve_logs_no_request_at_warning(tmp_path: Path) -> None:
    args = ["--port", "0", "--data-dir", str(tmp_path), "--log-level", "warning"]
    # The only line at warning is the end: nothing to wait for but the port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args[1] = str(port)
    server = Command("serve", "examples.chat:app", *args, cwd=ROOT)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                status, _ = get(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)
        assert status == 200, status
        assert server.stop() == 0, server.lines
    finally:
        server.kill()
    assert server.lines == [], f"nothing logged at warning: {server.lines}"
