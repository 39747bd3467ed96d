"""Every option of ``serve()`` and ``open_runtime()``, as command-line flags and config keys.

The options are defined once, by the records that check them:
:class:`~trio_durable._runtime.RuntimeOptions` (``open_runtime``) and
:class:`~trio_durable._gateway._options.ServeOptions` (``serve``). This
module reads those records (names, types, defaults) and the ``Args:``
sections of ``open_runtime``'s and ``serve``'s docstrings (help texts), so a
new field of either record is a new flag and a new key with no change here.
Only a field whose type has no text form needs an adapter (``_ADAPTED``):
``ssl_context`` is given as certificate and key files, ``authenticate`` as
``module:function``; a test fails naming any other.

The embedded storage's options (``durability``, ``max_open_sql``) are read
the same way from :class:`~trio_durable.SqliteBackend`'s keyword
parameters and its docstring; :meth:`Config.backend_kwargs` gives them to
whoever builds the backend of ``--data-dir``. With ``--database`` they do
not apply and are refused.

A command's settings come from, in rising precedence: the defaults, the
config file (``trio-durable.toml`` in the current directory, else the
``[tool.trio-durable]`` table of ``pyproject.toml``, or ``--config PATH``),
its ``[dev]`` table (for ``dev`` only), and the command line. Keys are the
options' Python names (``hibernate_after``; ``hibernate-after`` is
accepted too). An unknown key is refused naming it and the closest known
one; a bad value is refused with the record's own error, naming the option
and where the value came from. Relative paths in a file are relative to
the file.

The resolved settings travel to child processes (``dev``'s server, a
cluster's workers) as JSON (:meth:`Config.to_json`), and each child builds
its TLS context and imports its ``authenticate`` function itself.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import math
import os
import re
import ssl
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from .._gateway._options import ServeOptions
from .._gateway._serve import serve
from .._limits import check_positive_int
from .._runtime import RuntimeOptions, open_runtime
from .._storage._sqlite import SqliteBackend
from ._common import LOG_LEVELS, UsageError, import_object

__all__ = [
    "CONFIG_NAME",
    "PYPROJECT_TABLE",
    "SETTINGS",
    "Config",
    "Setting",
    "add_settings",
    "load_config_file",
    "resolve",
]

#: The config file looked for in the current directory.
CONFIG_NAME: Final = "trio-durable.toml"
#: The table of ``pyproject.toml`` read when there is no ``trio-durable.toml``.
PYPROJECT_TABLE: Final = "trio-durable"
#: The string that stands for ``None`` (TOML has no null): ``blocking_reset_after = "none"``.
NONE: Final = "none"

Kind = Literal["int", "float", "int?", "float?", "bool", "str", "str?", "list", "choice"]
Target = Literal["command", "runtime", "serve", "tls", "import", "backend"]


@attrs.frozen
class Setting:
    """One setting: a command-line flag and a config key.

    Attributes:
        name: The key in a config file and the keyword argument it becomes.
        kind: How its text (command line) or value (file) is read.
        default: Its value when neither the file nor the command line sets it.
        help: One sentence for ``--help``.
        target: Where it goes: the command itself, ``open_runtime``,
            ``serve``, ``serve``'s TLS context, an imported function, or
            the ``SqliteBackend`` of ``--data-dir``.
        commands: The commands that take it.
        choices: The allowed values of a ``choice``.
        path: A file or directory: relative to its config file when set there.
    """

    name: str
    kind: Kind
    default: Any
    help: str
    target: Target
    commands: frozenset[str] = frozenset({"serve", "dev"})
    choices: tuple[str, ...] = ()
    path: bool = False

    @property
    def flag(self) -> str:
        """``--hibernate-after`` for ``hibernate_after``."""
        return "--" + self.name.replace("_", "-")


# --------------------------------------------------- settings from the records


def docstring_args(function: Callable[..., Any]) -> dict[str, str]:
    """The ``Args:`` section of a Google-style docstring: name → text on one line."""
    lines = (inspect.getdoc(function) or "").splitlines()
    try:
        start = lines.index("Args:") + 1
    except ValueError:
        return {}
    found: dict[str, str] = {}
    current: str | None = None
    for line in lines[start:]:
        if not line.strip():
            continue
        if not line.startswith("    "):
            break  # the next section or paragraph
        match = re.match(r"    (\w+): (.*)", line)
        if match:
            current = match[1]
            found[current] = match[2].strip()
        elif current is not None:
            found[current] += " " + line.strip()
    return found


def _first_sentence(text: str) -> str:
    """The first sentence of a docstring's text, without roles and asides on defaults.

    ``--help`` shows the default itself, so "(default 30 s)" goes.
    """
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")
    match = re.search(r"(?<=[a-z)0-9\]])\.(\s|$)", text)
    sentence = text[: match.start() + 1] if match else text
    sentence = re.sub(r"\s*\((default|see)( [^)]*)?\)", "", sentence)
    first_word = sentence.split(" ", 1)[0]
    if first_word[1:].islower():  # "Seconds ..." but not "WebSocket ..."
        sentence = sentence[0].lower() + sentence[1:]
    return sentence


def _kind_of(name: str, hint: Any) -> Kind:
    """The text form of an option, from its type; unknown types need an adapter.

    Raises:
        TypeError: the type has no text form (add an adapter to ``_ADAPTED``).
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = [arg for arg in args if arg is not type(None)]
        if inner in (int, float, str):
            return typing.cast(Kind, f"{inner.__name__}?")
        hint, origin = inner, typing.get_origin(inner)
    if hint is bool:
        return "bool"
    if hint in (int, float, str):
        return typing.cast(Kind, hint.__name__)
    if origin in (frozenset, set, list, tuple) or (
        origin is not None and isinstance(origin, type) and issubclass(origin, Iterable)
    ):
        return "list"
    raise TypeError(
        f"option {name!r} has type {hint!r}, which has no command-line form: "
        "give it an adapter in trio_durable/_cli/_options.py"
    )


#: Defaults of the command line that differ from the records': a server
#: process owns its garbage collector, and ``host``/``port`` have none there.
_COMMAND_DEFAULTS: Final[Mapping[str, Any]] = {
    "host": "127.0.0.1",
    "port": 8787,
    "tune_gc": True,
}

#: Options whose value is no text: what stands for them on the command line.
_ADAPTED: Final[Mapping[str, tuple[Setting, ...]]] = {
    "ssl_context": (
        Setting(
            "ssl_certfile",
            "str?",
            None,
            "serve HTTPS and WSS with this PEM certificate chain (its key too, "
            "unless --ssl-keyfile is given).",
            "tls",
            path=True,
        ),
        Setting(
            "ssl_keyfile",
            "str?",
            None,
            "the PEM private key of --ssl-certfile.",
            "tls",
            path=True,
        ),
    ),
    "authenticate": (
        Setting(
            "authenticate",
            "str?",
            None,
            "MODULE:FUNCTION, imported like the app: async authenticate(request) -> "
            "Response | None, called for every WebSocket upgrade before the worker.",
            "import",
        ),
    ),
}


def _record_settings(record: type, documented: Callable[..., Any], target: Target) -> list[Setting]:
    hints = typing.get_type_hints(record)
    helps = docstring_args(documented)
    settings: list[Setting] = []
    for field in attrs.fields(record):
        if field.name in _ADAPTED:
            settings.extend(_ADAPTED[field.name])
            continue
        default = _COMMAND_DEFAULTS.get(field.name, field.default)
        if default is attrs.NOTHING:  # pragma: no cover - every option without one is above
            raise TypeError(f"option {field.name!r} needs a command-line default")
        settings.append(
            Setting(
                field.name,
                _kind_of(field.name, hints[field.name]),
                default,
                _first_sentence(helps.get(field.name, "")),
                target,
            )
        )
    return settings


#: Keyword parameters of ``SqliteBackend`` that are no setting, and why.
_BACKEND_INTERNAL: Final[Mapping[str, str]] = {
    # The command's own business: a cluster's worker shares its supervisor's lock.
    "lock_fd": "the data directory's lock, passed by a cluster's supervisor",
    # Its default is the right one for a server (commits in a thread); the
    # other value exists for tests under autojump_clock.
    "commit_in_thread": "automatic: in a thread, except under Trio's MockClock",
}


def _backend_settings() -> list[Setting]:
    """The settings of ``SqliteBackend``: its keyword parameters, less ``_BACKEND_INTERNAL``.

    Raises:
        TypeError: a new parameter's type has no command-line form.
    """
    hints = typing.get_type_hints(SqliteBackend.__init__)
    helps = docstring_args(SqliteBackend)
    settings: list[Setting] = []
    for parameter in inspect.signature(SqliteBackend).parameters.values():
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue  # data_dir: the command's --data-dir
        if parameter.name in _BACKEND_INTERNAL:
            continue
        hint = hints[parameter.name]
        choices: tuple[str, ...] = ()
        if typing.get_origin(hint) is Literal:
            kind: Kind = "choice"
            choices = tuple(str(arg) for arg in typing.get_args(hint))
        else:
            kind = _kind_of(parameter.name, hint)
        settings.append(
            Setting(
                parameter.name,
                kind,
                parameter.default,
                _first_sentence(helps.get(parameter.name, "")),
                "backend",
                choices=choices,
            )
        )
    return settings


_COMMAND_SETTINGS: Final = (
    Setting("app", "str?", None, "the app, MODULE:ATTRIBUTE (a trio_durable.App).", "command"),
    Setting(
        "data_dir",
        "str",
        "data",
        "directory of the durable storage (created if missing).",
        "command",
        commands=frozenset({"serve", "dev", "inspect"}),
        path=True,
    ),
    Setting(
        "log_level",
        "choice",
        "info",
        "logging level; info logs every request and object lifecycle, debug also "
        "shows tracebacks of errors at start.",
        "command",
        choices=LOG_LEVELS,
    ),
    Setting(
        "workers",
        "int",
        1,
        "worker processes serving the port, one live instance per object across them "
        "(1: this process serves, and SIGHUP is logged and ignored); with 2 or more, "
        "SIGHUP restarts them one by one.",
        "command",
        commands=frozenset({"serve"}),
    ),
    Setting(
        "database",
        "str?",
        None,
        "keep everything in this PostgreSQL database (postgresql://user@host:port/db) "
        "instead of --data-dir; every node of a deployment names the same one.",
        "command",
        commands=frozenset({"serve", "inspect"}),
    ),
    Setting(
        "node",
        "str?",
        None,
        "this node's name in a deployment on --database (stable across its restarts); "
        "default HOSTNAME:PORT.",
        "command",
        commands=frozenset({"serve"}),
    ),
    Setting(
        "link_host",
        "str?",
        None,
        "the address other nodes reach this node's workers on (TCP, free ports); "
        "default --host, or this machine's address when --host is a wildcard.",
        "command",
        commands=frozenset({"serve"}),
    ),
    Setting(
        "lease_seconds",
        "float",
        4.0,
        "seconds a worker that stopped answering keeps its objects from the others "
        "(with --workers > 1 or --database).",
        "command",
        commands=frozenset({"serve"}),
    ),
    Setting(
        "metrics_port",
        "int?",
        None,
        "serve Prometheus metrics (GET /metrics) on this port of --metrics-host.",
        "command",
    ),
    Setting(
        "metrics_host",
        "str",
        "127.0.0.1",
        "address of the metrics port.",
        "command",
    ),
    Setting(
        "https",
        "bool",
        False,
        "serve HTTPS with a certificate made for this run; the CA file to trust is printed.",
        "command",
        commands=frozenset({"dev"}),
    ),
)

#: Every setting, in the order of ``--help``: the command's, serve()'s,
#: open_runtime()'s, the embedded storage's.
SETTINGS: Final[tuple[Setting, ...]] = (
    *_COMMAND_SETTINGS,
    *_record_settings(ServeOptions, serve, "serve"),
    *_record_settings(RuntimeOptions, open_runtime, "runtime"),
    *_backend_settings(),
)
_BY_NAME: Final = {setting.name: setting for setting in SETTINGS}
_GROUPS: Final = {
    "command": "command",
    "serve": "serve() options",
    "tls": "serve() options",
    "import": "serve() options",
    "runtime": "open_runtime() options",
    "backend": "storage options (SqliteBackend, for --data-dir)",
}


def settings_of(command: str) -> list[Setting]:
    """The settings ``command`` takes."""
    return [s for s in SETTINGS if command in s.commands]


# ----------------------------------------------------------- the command line


def _text_parser(setting: Setting) -> Callable[[str], Any]:
    kind = setting.kind

    def parse(text: str) -> Any:
        if kind.endswith("?") and text.strip().lower() == NONE:
            return None
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
        if kind == "list":
            items = [item.strip() for item in text.split(",") if item.strip()]
            return [None if item.lower() == NONE else item for item in items]
        return text

    # argparse names the type in its error: "invalid float value: 'ten'".
    parse.__name__ = {"int": "int", "float": "float", "int?": "int", "float?": "float"}.get(
        kind, "value"
    )
    return parse


def _metavar(setting: Setting) -> str:
    if setting.path:
        return "PATH"
    if setting.target == "import":
        return "MODULE:FUNCTION"
    base = {"int": "N", "float": "NUMBER", "list": "A,B,..."}.get(setting.kind.rstrip("?"))
    if base is None:
        return setting.name.rpartition("_")[2].upper()  # HOST
    return f"{base}|none" if setting.kind.endswith("?") else base


def add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """Add ``command``'s settings (and ``--config``) to its parser.

    Nothing has a parser default (``argparse.SUPPRESS``), so that the parsed
    arguments hold exactly what the command line gave, to lay over the file.
    """
    parser.add_argument(
        "app",
        metavar="MODULE:ATTRIBUTE",
        nargs="?",
        default=argparse.SUPPRESS,
        help="the app, e.g. examples.chat:app (or app = ... in the config file)",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"the config file (default: ./{CONFIG_NAME}, else [tool.{PYPROJECT_TABLE}] "
        "in ./pyproject.toml)",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in settings_of(command):
        if setting.name == "app":
            continue
        title = _GROUPS[setting.target]
        group = groups.get(title)
        if group is None:
            group = groups[title] = parser.add_argument_group(title)
        if setting.kind == "bool":
            shown = "on" if setting.default else "off"
        else:
            shown = "none" if setting.default is None else str(setting.default)
        help_text = f"{setting.help.rstrip('.')} (default: {shown})"
        if setting.kind == "bool":
            group.add_argument(
                setting.flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif setting.kind == "choice":
            group.add_argument(
                setting.flag,
                choices=setting.choices,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                setting.flag,
                type=_text_parser(setting),
                metavar=_metavar(setting),
                default=argparse.SUPPRESS,
                help=help_text,
            )


# ---------------------------------------------------------------- the file


@attrs.frozen
class ConfigFile:
    """What a config file sets: its top-level settings and its ``[dev]`` table."""

    path: Path
    values: Mapping[str, Any]
    dev: Mapping[str, Any]

    @property
    def label(self) -> str:
        """How errors name it: ``trio-durable.toml`` or ``pyproject.toml [tool.trio-durable]``."""
        shown = _shown_path(self.path)
        return f"{shown} [tool.{PYPROJECT_TABLE}]" if self.path.name == "pyproject.toml" else shown


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_config_file(explicit: str | None) -> ConfigFile | None:
    """The config file: ``explicit``, else ``./trio-durable.toml``, else ``./pyproject.toml``.

    ``pyproject.toml`` counts only when it has a ``[tool.trio-durable]`` table.

    Raises:
        UsageError: ``explicit`` is missing, a file is not valid TOML, or it
            has an unknown key or table (named, with the closest known key).
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"--config {explicit!r}: no such file")
        document = _read_toml(path)
        table = (
            _tool_table(document, path, required=True)
            if path.name == "pyproject.toml"
            else document
        )
    elif Path(CONFIG_NAME).is_file():
        path = Path(CONFIG_NAME)
        table = _read_toml(path)
    elif Path("pyproject.toml").is_file():
        path = Path("pyproject.toml")
        found = _tool_table(_read_toml(path), path, required=False)
        if found is None:
            return None
        table = found
    else:
        return None
    assert table is not None
    return _check_keys(path, table)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{_shown_path(path)} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {_shown_path(path)}: {exc.strerror or exc}") from None


def _tool_table(document: dict[str, Any], path: Path, *, required: bool) -> dict[str, Any] | None:
    table = document.get("tool", {}).get(PYPROJECT_TABLE)
    if table is None:
        if required:
            raise UsageError(f"{_shown_path(path)} has no [tool.{PYPROJECT_TABLE}] table")
        return None
    if not isinstance(table, dict):
        raise UsageError(f"tool.{PYPROJECT_TABLE} in {_shown_path(path)} must be a table")
    return table


def _normal(key: str) -> str:
    return key.replace("-", "_")


def _check_keys(path: Path, table: Mapping[str, Any]) -> ConfigFile:
    label = ConfigFile(path, {}, {}).label
    values = _known(table, label, allowed=None, section="")
    dev_table = values.pop("dev", None)
    dev: dict[str, Any] = {}
    if dev_table is not None:
        if not isinstance(dev_table, dict):
            raise UsageError(f"dev in {label} must be a table ([dev]), got {dev_table!r}")
        dev = _known(dev_table, label, allowed="dev", section="[dev] ")
    return ConfigFile(path, values, dev)


def _known(
    table: Mapping[str, Any], label: str, *, allowed: str | None, section: str
) -> dict[str, Any]:
    known = [s.name for s in SETTINGS if s.name != "config"]
    if allowed is None:
        known.append("dev")
    found: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in table.items():
        name = _normal(key)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"unknown key {key!r} in {section}{label}{hint}")
        if allowed is not None and allowed not in _BY_NAME[name].commands:
            raise UsageError(f"{key!r} in [dev] of {label}: dev does not take it")
        if name in found:
            raise UsageError(f"{spelled[name]!r} and {key!r} in {section}{label} are the same key")
        found[name] = value
        spelled[name] = key
    return found


# ------------------------------------------------------------- resolving


@attrs.frozen
class Config:
    """A command's settings, resolved from the defaults, the file and the command line.

    Attributes:
        command: ``serve`` or ``dev`` (or ``inspect``, which uses ``data_dir``).
        values: Every setting of the command: name → value (plain data).
        given: The settings the file or the command line set.
    """

    command: str
    values: Mapping[str, Any]
    given: frozenset[str] = frozenset()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def to_json(self) -> str:
        """The settings as JSON, for a child process (:meth:`from_json`)."""
        return json.dumps(
            {"command": self.command, "values": dict(self.values), "given": sorted(self.given)}
        )

    @classmethod
    def from_json(cls, text: str) -> Config:
        """The settings :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(data["command"], data["values"], frozenset(data["given"]))

    def runtime_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``open_runtime``: every option of ``RuntimeOptions``."""
        return {s.name: self.values[s.name] for s in SETTINGS if s.target == "runtime"}

    def backend_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``SqliteBackend(data_dir, ...)``: ``durability``, ``max_open_sql``.

        Every storage setting, set or not (the defaults are the backend's own).
        """
        return {
            s.name: self.values[s.name]
            for s in SETTINGS
            if s.target == "backend" and s.name in self.values
        }

    def serve_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``serve`` except ``host`` and ``port``.

        Builds the TLS context from the certificate files and imports the
        ``authenticate`` function (run it where the server runs).

        Raises:
            UsageError: a certificate or key cannot be loaded, or
                ``authenticate`` cannot be imported.
        """
        kwargs = {
            s.name: self.values[s.name]
            for s in SETTINGS
            if s.target == "serve" and s.name not in ("host", "port")
        }
        kwargs["ssl_context"] = self.ssl_context()
        kwargs["authenticate"] = self.authenticator()
        return kwargs

    def ssl_context(self) -> ssl.SSLContext | None:
        """A server TLS context from ``ssl_certfile`` (and ``ssl_keyfile``), or ``None``.

        Raises:
            UsageError: the files cannot be read or do not hold a certificate and its key.
        """
        certfile: str | None = self.values.get("ssl_certfile")
        keyfile: str | None = self.values.get("ssl_keyfile")
        if certfile is None:
            if keyfile is not None:
                raise UsageError("ssl_keyfile needs ssl_certfile (the certificate of that key)")
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(certfile, keyfile)
        except (ssl.SSLError, OSError) as exc:
            files = repr(certfile) + (f" and {keyfile!r}" if keyfile else "")
            raise UsageError(
                f"cannot load the TLS certificate and key from {files}: {exc.strerror or exc}"
            ) from None
        return context

    def authenticator(self) -> Any:
        """The ``authenticate`` function, imported from ``MODULE:FUNCTION``, or ``None``.

        Raises:
            UsageError: it cannot be imported.
        """
        spec: str | None = self.values.get("authenticate")
        if spec is None:
            return None
        return import_object(spec, what="authenticate")


def resolve(command: str, args: argparse.Namespace) -> Config:
    """``command``'s settings from its parsed ``args``, the config file and the defaults.

    Every value set by the file or the command line is checked here, by the
    record that owns it (``RuntimeOptions``, ``ServeOptions``), so a bad one
    is refused before anything starts.

    Raises:
        UsageError: the file cannot be read or has an unknown key, or a
            value is refused (the message names the option and its source).
    """
    file = load_config_file(getattr(args, "config", None))
    settings = settings_of(command)
    values: dict[str, Any] = {s.name: s.default for s in settings}
    sources: dict[str, str] = {}
    if file is not None:
        layers = [file.values] + ([file.dev] if command == "dev" else [])
        for layer in layers:
            for name, raw in layer.items():
                setting = _BY_NAME[name]
                if command not in setting.commands:
                    continue  # `workers` in the file is for serve, not dev
                values[name] = _from_file(setting, raw, file)
                sources[name] = f"in {file.label}"
    for name, value in vars(args).items():
        flagged = _BY_NAME.get(name)
        if flagged is not None and command in flagged.commands:
            values[name] = value
            sources[name] = f"from {flagged.flag}" if name != "app" else "on the command line"
    for name, source in sources.items():
        _check(_BY_NAME[name], values[name], source)
    if values.get("database") is not None:
        for name in sources:
            if _BY_NAME[name].target == "backend":
                raise UsageError(
                    f"{name} is an option of the SQLite storage of --data-dir, not of "
                    f"--database ({sources[name]})"
                )
    return Config(command, values, frozenset(sources))


def _from_file(setting: Setting, value: Any, file: ConfigFile) -> Any:
    """A file's value as the command line would give it (``"none"``, lists, paths)."""
    if setting.kind.endswith("?") and isinstance(value, str) and value.lower() == NONE:
        return None
    if setting.kind == "list" and isinstance(value, list):
        return [None if isinstance(v, str) and v.lower() == NONE else v for v in value]
    if setting.path and isinstance(value, str) and not os.path.isabs(value):
        return os.path.normpath(file.path.parent / value)
    return value


def _check(setting: Setting, value: Any, source: str) -> None:
    """Refuse a bad value with its owner's error, naming where it came from.

    Raises:
        UsageError: the value is refused.
    """
    try:
        if setting.target == "runtime":
            RuntimeOptions(**{setting.name: value})
        elif setting.target == "serve":
            ServeOptions(**{"host": "127.0.0.1", "port": 0, setting.name: value})
        elif setting.target == "backend":
            _check_backend(setting, value)
        else:
            _check_plain(setting, value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{_one_line(exc)} ({source})") from None


def _check_backend(setting: Setting, value: Any) -> None:
    """The checks of a storage setting: its choices, a positive count, then the backend's own.

    Raises:
        TypeError: the value has the wrong type.
        ValueError: it has a bad value.
    """
    if setting.kind == "choice" and value not in setting.choices:
        choices = " or ".join(repr(choice) for choice in setting.choices)
        raise ValueError(f"{setting.name} must be {choices}, got {value!r}")
    if setting.kind == "int":
        check_positive_int(setting.name, value)  # a count of things kept open
    SqliteBackend(None, **{setting.name: value})  # builds nothing: no file, no thread


def _check_plain(setting: Setting, value: Any) -> None:
    """The checks of the settings no record owns (the command's, file names, imports).

    Raises:
        TypeError: the value has the wrong type.
        ValueError: it has a bad value.
    """
    name, kind = setting.name, setting.kind
    if value is None and kind.endswith("?"):
        return
    if kind in ("str", "str?") and not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r}")
    if setting.target == "tls" and not os.path.isfile(value):
        raise ValueError(f"{name} {value!r}: no such file")
    if kind == "bool" and not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {value!r}")
    if kind == "choice" and value not in setting.choices:
        raise ValueError(f"{name} must be one of {', '.join(setting.choices)}; got {value!r}")
    if kind in ("int", "int?"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if name == "workers" and value < 1:
            raise ValueError(f"workers must be at least 1, got {value}")
        if name.endswith("port") and not 0 <= value <= 65535:
            raise ValueError(f"{name} must be from 0 to 65535, got {value}")
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if name == "lease_seconds" and not (math.isfinite(value) and value > 0):
            raise ValueError(f"lease_seconds must be a positive number of seconds, got {value}")
    if name == "database" and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"database must be a postgresql:// URL, got {value.split('@')[-1]!r}")


def _one_line(exc: BaseException) -> str:
    # attrs' own validators put the message first, then the attribute and values.
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return " ".join(message.split())
