"""``trio-durable inspect``: stored objects, their keys, SQL tables and alarms, waking nothing.

::

    trio-durable inspect --data-dir data                  # every namespace and object
    trio-durable inspect --data-dir data rooms:lobby      # one object's keys and alarm
    trio-durable inspect --data-dir data 2939e0ae...      # the same by its 64-hex ID
    trio-durable inspect --json                           # machine-readable

    trio-durable inspect --database postgresql://td@db/td # a deployment on PostgreSQL

No runtime is opened and the data directory's lock is not taken: the
databases are read read-only (:mod:`._inspect_sqlite`, :mod:`._inspect_postgres`),
so it works while servers run on them and shows what they have committed.
Values are decoded with the runtime's codec and shown as their ``repr``,
shortened. Where the data lives is a :class:`~._inspect_model.Source`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import attrs

from .. import _codec
from ._common import Commands, UsageError
from ._inspect_model import Deployment, ObjectDetail, ObjectView, Source
from ._inspect_sqlite import SqliteSource
from ._options import CONFIG_NAME, resolve

__all__ = ["add_parser", "decode_value", "run"]

#: Characters of a value's ``repr`` shown before it is cut.
VALUE_WIDTH = 80
#: Keys of one object shown by default.
DEFAULT_LIMIT = 100


def add_parser(commands: Commands) -> None:
    """Add ``inspect`` to the command line."""
    parser = commands.add_parser(
        "inspect",
        help="list stored objects, keys, SQL tables and alarms without waking any",
        description=(
            "Show what a data directory (or a PostgreSQL database) holds: namespaces, "
            "object IDs with their names, key counts and sizes, SQL tables and pending "
            "alarms; with an object (a 64-hex ID or NAMESPACE:NAME), its keys and values. "
            "Read-only: no object is woken, and it works while servers run on it."
        ),
    )
    parser.add_argument(
        "object",
        nargs="?",
        metavar="ID|NAMESPACE:NAME",
        help="one object: its 64-hex ID, NAMESPACE:NAME or NAMESPACE:ID",
    )
    parser.add_argument(
        "--data-dir",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"the data directory (default: data_dir of ./{CONFIG_NAME}, else ./data)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="read a deployment's PostgreSQL database (postgresql://user@host:port/db) "
        f"instead of a data directory (default: database of ./{CONFIG_NAME}, if any)",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"the config file to take data_dir from (default: ./{CONFIG_NAME})",
    )
    parser.add_argument("--namespace", metavar="NAME", help="list only this namespace")
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"keys shown of one object; 0 shows all (default: {DEFAULT_LIMIT})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``inspect`` with parsed arguments; returns the exit status."""
    config = resolve("inspect", args)
    if args.limit < 0:
        raise UsageError(f"--limit must be 0 (all) or more, got {args.limit}")
    database: str | None = config["database"]
    if database is not None and "data_dir" in config.given:
        raise UsageError("give only one of --data-dir and --database")
    source = open_source(config["data_dir"], database)
    try:
        report: Deployment | ObjectDetail
        if args.object is None:
            report = _deployment(source, args.namespace)
        else:
            report = _detail(source, args.object, limit=args.limit or None)
        _print(report, source.location, args.json, sys.stdout)
    finally:
        source.close()
    return 0


def open_source(data_dir: str, database: str | None = None) -> Source:
    """The source to read: the PostgreSQL ``database`` if given, else ``data_dir``.

    Raises:
        UsageError: it holds no trio_durable data or cannot be read (or
            psycopg, which PostgreSQL needs, is not installed).
    """
    if database is None:
        return SqliteSource(data_dir, decode_value)
    try:
        from ._inspect_postgres import PostgresSource  # psycopg is needed only here
    except ImportError as exc:
        raise UsageError(
            f"--database needs psycopg (pip install 'trio-durable[postgres]'): {exc}"
        ) from None
    return PostgresSource(database, decode_value)


def decode_value(data: bytes) -> tuple[str, bool]:
    """A stored value, decoded with the runtime's codec, as a shortened ``repr``."""
    try:
        value = _codec.decode(data)
    except (ValueError, TypeError) as exc:
        return f"<cannot decode {len(data):,} bytes: {exc}>", False
    text = repr(value)
    if len(text) > VALUE_WIDTH:
        return text[: VALUE_WIDTH - 1] + "…", False
    return text, True


def _deployment(source: Source, namespace: str | None) -> Deployment:
    report = source.deployment(namespace)
    if namespace is not None and not report.namespaces:
        known = ", ".join(n.name for n in source.deployment().namespaces) or "none"
        raise UsageError(f"no namespace {namespace!r} in {source.location} (namespaces: {known})")
    return report


def _detail(source: Source, ref: str, *, limit: int | None) -> ObjectDetail:
    matches = source.find(ref)
    if not matches:
        if ":" in ref:
            raise UsageError(f"{source.location} has no ID secret yet: it stores no object")
        raise UsageError(
            f"no stored object has the ID {ref!r} in {source.location} "
            "(give a 64-hex ID or NAMESPACE:NAME)"
        )
    if len(matches) > 1:
        shown = ", ".join(f"{ns}:{hex_id}" for ns, hex_id, _ in matches)
        raise UsageError(f"{ref!r} is in several namespaces; say which: {shown}")
    ((namespace, hex_id, name),) = matches
    return source.detail(namespace, hex_id, name, limit=limit)


# ---------------------------------------------------------------- output


def _print(report: Deployment | ObjectDetail, location: str, as_json: bool, out: TextIO) -> None:
    if as_json:
        data = (
            _deployment_json(report)
            if isinstance(report, Deployment)
            else _detail_json(report, location)
        )
        json.dump(data, out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif isinstance(report, Deployment):
        out.write(_deployment_text(report))
    else:
        out.write(_detail_text(report))


def _object_json(view: ObjectView) -> dict[str, Any]:
    data = attrs.asdict(view)
    data.pop("namespace")
    return data


def _deployment_json(report: Deployment) -> dict[str, Any]:
    return {
        "source": report.location,
        "namespaces": [
            {
                "name": ns.name,
                "keys": ns.keys,
                "size": ns.size,
                "alarms": ns.alarms,
                "objects": [_object_json(o) for o in ns.objects],
            }
            for ns in report.namespaces
        ],
    }


def _detail_json(detail: ObjectDetail, location: str) -> dict[str, Any]:
    return {
        "source": location,
        "namespace": detail.object.namespace,
        **_object_json(detail.object),
        "entries": [attrs.asdict(entry) for entry in detail.entries],
    }


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value:.1f} TiB"


def _when(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    delta = epoch - time.time()
    span = _span(abs(delta))
    relative = f"in {span}" if delta >= 0 else f"{span} ago"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({relative})"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _alarm_text(view: ObjectView) -> str:
    alarm = view.alarm
    if alarm is None:
        return "-"
    retry = f" (retry {alarm.retry_count})" if alarm.retry_count else ""
    return _when(alarm.time) + retry


def _tables_text(view: ObjectView) -> str:
    if not view.sql_tables:
        return "-"
    parts = []
    for table in view.sql_tables:
        rows = "?" if table.rows is None else f"{table.rows:,}"
        parts.append(f"{table.name} ({rows} row{'' if table.rows == 1 else 's'})")
    return ", ".join(parts)


def _table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _deployment_text(report: Deployment) -> str:
    lines = [f"{report.location}: read-only, no object woken", ""]
    if not report.namespaces:
        lines.append("no stored objects")
    for ns in report.namespaces:
        count = len(ns.objects)
        lines.append(
            f"{ns.name}: {count} object{'' if count == 1 else 's'}, {ns.keys:,} keys, "
            f"{_size(ns.size)}, {ns.alarms} alarm{'' if ns.alarms == 1 else 's'}"
        )
        rows = [["ID", "NAME", "KEYS", "SIZE", "SQL TABLES", "ALARM"]]
        for view in ns.objects:
            rows.append(
                [
                    view.id,
                    "-" if view.name is None else view.name,
                    f"{view.keys:,}",
                    _size(view.size),
                    _tables_text(view),
                    _alarm_text(view),
                ]
            )
        lines.extend(_table(rows, right=frozenset({2, 3})))
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _detail_text(detail: ObjectDetail) -> str:
    view = detail.object
    label = f"{view.namespace}:{view.name}" if view.name is not None else view.namespace
    lines = [
        label,
        f"  id      {view.id}",
        f"  keys    {view.keys:,} ({_size(view.size)})",
        f"  alarm   {_alarm_text(view)}",
        f"  sql     {_tables_text(view)}",
    ]
    if not view.keys and view.alarm is None and not view.sql_tables:
        lines.append("  (nothing stored)")
    if detail.entries:
        lines.append("")
        rows = [["KEY", "SIZE", "VALUE"]]
        rows += [[e.key, _size(e.size), e.value] for e in detail.entries]
        lines.extend(_table(rows, right=frozenset({1})))
    if len(detail.entries) < view.keys:
        lines.append(
            f"  ({len(detail.entries):,} of {view.keys:,} keys shown; --limit 0 shows all)"
        )
    return "\n".join(lines) + "\n"
