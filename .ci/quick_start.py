"""Run the README's first command as a newcomer would, and check that the demo answers.

A fresh virtualenv that is *not* activated: ``python`` is the venv's
interpreter, but the venv's ``bin/`` is not on ``PATH`` (so a console script
such as ``trio-durable`` cannot be found, which is how the first quick start
failed). The command is read from README.md (the first ``sh`` block under
"## Quick start"), run as written in a copy of this checkout, except for
``--port 8787``, which becomes a free port so that a demo already running on
this machine cannot fail the check. Then: ``GET /`` must answer 200 (within a
generous bound: the command installs the package first), SIGINT must stop
the server, and the command must exit 0.

Usage: ``python .ci/quick_start.py`` from anywhere (only the standard library).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Seconds for the install and the start; generous: a loaded machine is slow, not broken.
START_TIMEOUT = 900.0
STOP_TIMEOUT = 60.0
README_PORT = "--port 8787"


def first_command(readme: str) -> str:
    """The first ``sh`` code block of README.md's "## Quick start" section."""
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)\n```$", section, re.DOTALL | re.MULTILINE)
    if not blocks:
        raise SystemExit("quick start: README.md has no ```sh block under '## Quick start'")
    command: str = blocks[0].strip()
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def copy_checkout(destination: Path) -> None:
    """The files git knows (tracked, or new and not ignored): what a fresh clone has."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    for name in listing.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    command = first_command((ROOT / "README.md").read_text())
    if README_PORT not in command:
        raise SystemExit(f"quick start: the README's first command has no {README_PORT!r}")
    port = free_port()
    command = command.replace(README_PORT, f"--port {port}")
    print(f"quick start: {command}", flush=True)
    with tempfile.TemporaryDirectory(prefix="quick-start-") as temporary:
        work = Path(temporary)
        source = work / "trio_durable"
        copy_checkout(source)
        venv.create(work / "venv", with_pip=True)
        # `python` is the venv's; its bin/ (and any other Python's) is not on PATH.
        shims = work / "shims"
        shims.mkdir()
        (shims / "python").symlink_to(work / "venv" / "bin" / "python")
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
        }
        env["PATH"] = os.pathsep.join([str(shims), "/usr/bin", "/bin"])
        if shutil.which("trio-durable", path=env["PATH"]):  # pragma: no cover
            raise SystemExit(
                "quick start: trio-durable is on the test PATH: the check proves nothing"
            )
        log_path = work / "command.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                ["bash", "-c", command],
                cwd=source,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # SIGINT to its group, as Ctrl-C would
            )
        try:
            url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + START_TIMEOUT
            while not answers_200(url):
                if process.poll() is not None:
                    print(log_path.read_text()[-4000:])
                    raise SystemExit(f"quick start: the command exited with {process.returncode}")
                if time.monotonic() > deadline:
                    print(log_path.read_text()[-4000:])
                    raise SystemExit(f"quick start: no 200 from {url} in {START_TIMEOUT:.0f} s")
                time.sleep(1)
            print(f"quick start: GET {url} -> 200", flush=True)
            os.killpg(process.pid, signal.SIGINT)
            code = process.wait(STOP_TIMEOUT)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if code != 0:
            print(log_path.read_text()[-4000:])
            raise SystemExit(f"quick start: after SIGINT the command exited with {code}, not 0")
    print("quick start: stopped with SIGINT, exit status 0", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
