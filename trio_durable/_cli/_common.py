"""What the commands share: one-line errors, loading ``MODULE:APP``, the data directory, logs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, TypeAlias

from .._app import App

__all__ = [
    "LOG_LEVELS",
    "TRACEBACK_HINT",
    "Commands",
    "USAGE_ERROR",
    "UsageError",
    "check_app_spec",
    "configure_logging",
    "import_object",
    "load_app",
    "prepare_data_dir",
    "report_usage_error",
    "url",
]

#: Exit status of a bad argument (as argparse's own).
USAGE_ERROR = 2
LOG_LEVELS = ("debug", "info", "warning", "error")

#: What each command module's ``add_parser`` adds its sub-command to.
Commands: TypeAlias = "argparse._SubParsersAction[Any]"


#: Appended to an error whose traceback is worth reading, below debug level.
TRACEBACK_HINT = " (--log-level debug shows the traceback)"


class UsageError(Exception):
    """A bad argument: one line on stderr, exit status 2.

    When raised ``from`` another exception, ``--log-level debug`` prints that
    exception's traceback before the line.

    Args:
        message: The line (without ``trio-durable: error:``).
        traceback_hint: Say, below debug level, that ``--log-level debug``
            shows the cause's traceback (for errors in the user's code).
    """

    def __init__(self, message: str, *, traceback_hint: bool = False) -> None:
        super().__init__(message)
        self.traceback_hint = traceback_hint


def report_usage_error(exc: UsageError, log_level: str) -> int:
    """Print ``exc`` as one line on stderr (after its cause's traceback at debug level).

    Returns:
        The exit status of a bad argument, 2.
    """
    line = f"trio-durable: error: {exc}"
    if log_level == "debug":
        if exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__, file=sys.stderr)
    elif exc.traceback_hint:
        line += TRACEBACK_HINT  # at debug level the traceback is right above instead
    print(line, file=sys.stderr)
    return USAGE_ERROR


def check_app_spec(spec: str, *, what: str = "the app") -> tuple[str, str]:
    """Split ``MODULE:ATTRIBUTE``, catching the usual slips before anything is imported.

    Raises:
        UsageError: malformed, or a file name or path where a module name belongs.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"{what} must look like MODULE:ATTRIBUTE, got {spec!r}")
    if module_name.endswith(".py"):
        # "whiteboard.py" would import whiteboard (running it) and then fail on "py".
        hint = module_name[: -len(".py")].replace("/", ".").replace(os.sep, ".")
        raise UsageError(
            f"{spec!r} names a file; give the module name without .py: {hint}:{attribute}"
        )
    if "/" in module_name or os.sep in module_name:
        hint = module_name.strip("/").replace("/", ".").replace(os.sep, ".")
        raise UsageError(f"{spec!r} names a path; give a module name with dots: {hint}:{attribute}")
    return module_name, attribute


def import_object(spec: str, *, what: str = "the app") -> object:
    """Import ``module:attribute`` (from the current directory first).

    Args:
        spec: ``module:attribute``; the attribute may be dotted.
        what: What it is, for the error messages ("the app", "authenticate").

    Raises:
        UsageError: the spec is malformed, the import fails or the attribute is missing.
    """
    module_name, attribute = check_app_spec(spec, what=what)
    prefix = "" if what == "the app" else f"{what}: "
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(
                f"{prefix}no module named {module_name!r} (searched from {cwd})"
            ) from None
        raise UsageError(f"{prefix}cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:
        raise UsageError(
            f"{prefix}importing {module_name!r} failed: {type(exc).__name__}: {exc}{_where(exc)}",
            traceback_hint=True,
        ) from exc
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(
                f"{prefix}module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return target


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (from the current directory first) and check it is an App.

    Raises:
        UsageError: the spec is malformed, the import fails or the
            attribute is missing or not an :class:`~trio_durable.App`.
    """
    target = import_object(spec)
    if not isinstance(target, App):
        raise UsageError(
            f"{spec} is a {type(target).__name__}, not a trio_durable.App "
            "(App(worker=..., objects={...}))"
        )
    return target


def _where(exc: BaseException) -> str:
    """`` at file.py:12`` for the innermost frame of the user's code that raised."""
    if isinstance(exc, SyntaxError):
        return ""  # its message already names the file and line
    here = Path(__file__).resolve().parent
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<") and Path(frame.filename).resolve().parent != here
    ]
    if not frames:
        return ""
    frame = frames[-1]
    path = Path(frame.filename)
    try:
        shown = str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(path)
    return f" at {shown}:{frame.lineno}"


def prepare_data_dir(path: str) -> Path:
    """Create the data directory if needed and check that it can be written.

    Raises:
        UsageError: it is a file, sits under a file, or cannot be created or written.
    """
    data_dir = Path(path)
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"--data-dir {path!r} is a file, not a directory")
    for parent in data_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--data-dir {path!r} cannot be created: {str(parent)!r} is a file")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".trio-durable-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"data directory {path!r} is not writable: {exc.strerror or exc}"
        ) from None
    return data_dir


def url(host: str, port: int, *, https: bool = False) -> str:
    """The base URL of a server on ``host``:``port``."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if https else 'http'}://{shown}:{port}"


class _QuietStartFilter(logging.Filter):
    """Drop the gateway's own "serving on" line: the command logs a better one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "trio_durable.gateway"
            and record.levelno == logging.INFO
            and str(record.msg).startswith("serving on")
        )


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` with one compact format for every command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    if level != "debug":
        handler.addFilter(_QuietStartFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
