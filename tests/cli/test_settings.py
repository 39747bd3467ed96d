"""The command's settings come from ``ServeOptions``, ``RuntimeOptions`` and ``SqliteBackend``.

No process here: these tests read the tables the command line is built from.
"""

from __future__ import annotations

import argparse
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from trio_durable._cli import _build_parser, _options
from trio_durable._cli._options import SETTINGS, docstring_args, settings_of
from trio_durable._gateway._options import ServeOptions
from trio_durable._runtime import RuntimeOptions
from trio_durable._storage._sqlite import SqliteBackend

ROOT = Path(__file__).resolve().parents[2]
ADAPTED = {"ssl_context": ["ssl_certfile", "ssl_keyfile"], "authenticate": ["authenticate"]}


def record_options() -> list[str]:
    return [f.name for record in (ServeOptions, RuntimeOptions) for f in attrs.fields(record)]


def flags_of(command: str) -> set[str]:
    parser = _build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = commands.choices[command]
    return {flag for action in sub._actions for flag in action.option_strings}


@pytest.mark.parametrize("option", record_options())
@pytest.mark.parametrize("command", ["serve", "dev"])
def test_every_record_option_is_a_flag(option: str, command: str) -> None:
    names = ADAPTED.get(option, [option])
    for name in names:
        flag = "--" + name.replace("_", "-")
        assert flag in flags_of(command), f"{command} lacks {flag} (for {option})"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_has_help(setting: _options.Setting) -> None:
    assert len(setting.help) > 10, f"{setting.name} has no help: {setting.help!r}"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_flag_and_key_is_documented(setting: _options.Setting) -> None:
    cli_md = (ROOT / "docs" / "cli.md").read_text()
    assert f"`{setting.flag}`" in cli_md or setting.name == "app", (
        f"docs/cli.md lacks {setting.flag}"
    )


def test_the_defaults_are_the_records_except_where_a_server_differs() -> None:
    by_name = {s.name: s for s in SETTINGS}
    for record in (ServeOptions, RuntimeOptions):
        for field in attrs.fields(record):
            if field.name in ADAPTED or field.default is attrs.NOTHING:
                continue
            expected = True if field.name == "tune_gc" else field.default
            assert by_name[field.name].default == expected, field.name


def test_a_new_option_needs_no_change_to_the_command_line() -> None:
    @attrs.frozen
    class Options:
        patience: float = 3.0
        retries: int | None = None
        colors: frozenset[str] | None = None
        loud: bool = False

    def documented(*, patience: float, retries: int | None, colors: Any, loud: bool) -> None:
        """Something.

        Args:
            patience: Seconds to wait (default 3 s). More text.
            retries: How often to try again; None: forever.
            colors: Which colors.
            loud: Shout.
        """

    settings = {s.name: s for s in _options._record_settings(Options, documented, "runtime")}
    assert {name: (s.kind, s.default, s.help) for name, s in settings.items()} == {
        "patience": ("float", 3.0, "seconds to wait."),
        "retries": ("int?", None, "how often to try again; None: forever."),
        "colors": ("list", None, "which colors."),
        "loud": ("bool", False, "shout."),
    }


def test_an_option_of_an_unknown_type_asks_for_an_adapter() -> None:
    @attrs.frozen
    class Options:
        callback: Callable[[], None] | None = None

    with pytest.raises(TypeError, match="option 'callback' has type .* give it an adapter"):
        _options._record_settings(Options, lambda: None, "serve")


def test_docstring_args_reads_continuation_lines() -> None:
    def documented() -> None:
        """Summary.

        Args:
            first: One line
                and its continuation.
            second: Two.

        Returns:
            Nothing.
        """

    assert docstring_args(documented) == {
        "first": "One line and its continuation.",
        "second": "Two.",
    }


def test_https_is_for_dev_and_workers_for_serve() -> None:
    assert "--https" in flags_of("dev") and "--https" not in flags_of("serve"), "https: dev only"
    assert "--workers" in flags_of("serve") and "--workers" not in flags_of("dev"), (
        "workers: serve only"
    )
    assert [s.name for s in settings_of("inspect")] == ["data_dir", "database"], (
        "inspect reads data_dir or database"
    )


# ------------------------------------------------- the embedded storage's options


def backend_parameters() -> dict[str, inspect.Parameter]:
    """``SqliteBackend``'s keyword parameters (``data_dir`` is the command's ``--data-dir``)."""
    return {
        name: parameter
        for name, parameter in inspect.signature(SqliteBackend).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


@pytest.mark.parametrize("name", sorted(backend_parameters()))
def test_every_storage_option_is_a_setting_or_says_why_not(name: str) -> None:
    by_name = {s.name: s for s in SETTINGS}
    if name in _options._BACKEND_INTERNAL:
        assert name not in by_name, f"{name} is internal, yet a setting"
        return
    setting = by_name.get(name)
    assert setting is not None, f"SqliteBackend's {name} is no setting of the command"
    assert setting.target == "backend", setting
    assert setting.default == backend_parameters()[name].default, "the backend's own default"
    for command in ("serve", "dev"):
        assert setting.flag in flags_of(command), f"{command} lacks {setting.flag}"


def test_durability_choices_are_the_backends() -> None:
    (durability,) = [s for s in SETTINGS if s.name == "durability"]
    hint = typing.get_type_hints(SqliteBackend.__init__)["durability"]
    assert (durability.kind, durability.choices) == ("choice", typing.get_args(hint))
    assert durability.help.startswith('"process" survives a process crash'), durability.help
