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

``python`` on the command's ``PATH`` is a small shell script that execs the
venv's interpreter. A symlink would not do: Python looks for ``pyvenv.cfg``
next to the path it was started by, so a symlink outside the venv starts the
*base* interpreter, and ``pip install -e .`` would then re-point the CI
interpreter's own install at the temporary copy. Two guards make that
mistake loud: ``python`` on that ``PATH`` must report a ``sys.prefix`` that
is the venv (and differs from ``sys.base_prefix``), and the interpreter
running this script must import ``trio_durable`` from the same place
afterwards as before.

Usage: ``python .ci/quick_start.py`` from anywhere (only the standard library).
"""

from __future__ import annotations

import os
import re
import shlex
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


def newcomer_environment(shims: Path, venv_dir: Path) -> dict[str, str]:
    """This process's environment, with ``python`` the venv's and no venv ``bin/`` on PATH.

    ``shims/python`` execs the venv's interpreter by its own path (a symlink
    would start the base interpreter: see the module's docstring).
    """
    shims.mkdir(parents=True, exist_ok=True)
    shim = shims / "python"
    interpreter = shlex.quote(str(venv_dir / "bin" / "python"))
    shim.write_text(f'#!/bin/sh\nexec {interpreter} "$@"\n')
    shim.chmod(0o755)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE")
        and not key.startswith("PIP_")  # e.g. PIP_TARGET or PIP_PREFIX would install elsewhere
    }
    env["PATH"] = os.pathsep.join([str(shims), "/usr/bin", "/bin"])
    return env


def check_python_is_the_venv(env: dict[str, str], venv_dir: Path) -> None:
    """Fail unless ``python`` found on ``env``'s PATH runs inside ``venv_dir``."""
    probe = subprocess.run(
        ["sh", "-c", 'python -c "import sys; print(sys.prefix); print(sys.base_prefix)"'],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = probe.stdout.splitlines()
    if probe.returncode != 0 or len(lines) != 2:
        raise SystemExit(
            f"quick start: `python` on the test PATH does not run: {probe.stderr.strip()}"
        )
    prefix, base_prefix = lines
    if prefix == base_prefix or Path(prefix).resolve() != venv_dir.resolve():
        raise SystemExit(
            f"quick start: `python` on the test PATH is not the fresh virtualenv"
            f" (sys.prefix {prefix}, sys.base_prefix {base_prefix}, venv {venv_dir}):"
            " the command would install into another interpreter"
        )


def installed_location(python: str, env: dict[str, str] | None = None) -> str:
    """Where ``python`` imports trio_durable from, or why it cannot (compared, not parsed)."""
    probe = subprocess.run(
        [python, "-c", "import trio_durable; print(trio_durable.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),  # not a checkout: the current directory is on sys.path
    )
    if probe.returncode != 0:
        return "(no trio_durable: " + (probe.stderr.strip().splitlines() or ["?"])[-1] + ")"
    return probe.stdout.strip()


def answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    # Where this interpreter (CI's) imports trio_durable from: the run must not move it.
    before = installed_location(sys.executable)
    try:
        run_quick_start()
    finally:
        after = installed_location(sys.executable)
        if after != before:
            raise SystemExit(
                f"quick start: {sys.executable} imported trio_durable from {before},"
                f" and after the run from {after}: the command installed into it, not"
                " into the fresh virtualenv"
            )
    print(f"quick start: {sys.executable} still imports trio_durable from {after}")
    return 0


def run_quick_start() -> None:
    """Run the README's first command in a fresh venv; raise SystemExit on any failure."""
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
        venv_dir = work / "venv"
        venv.create(venv_dir, with_pip=True)
        env = newcomer_environment(work / "shims", venv_dir)
        check_python_is_the_venv(env, venv_dir)
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
        location = installed_location("python", env=env)
        if not location.startswith(str(source)):
            raise SystemExit(
                f"quick start: the venv's python imports trio_durable from {location},"
                f" not from the copy in {source}"
            )
        print(f"quick start: the venv's python imports trio_durable from {location}")


if __name__ == "__main__":
    sys.exit(main())
