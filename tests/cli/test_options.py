"""Every ``serve()``/``open_runtime()`` option as a flag and a config key (real processes).

The app under test (``optapp.py``, written into each test's directory)
answers ``GET /options`` with the options its runtime was opened with, so
a test sees what reached ``open_runtime``; ``serve`` options are seen by
their effect (a 413, a 403, a 401, HTTPS).
"""

from __future__ import annotations

import json
import signal
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from trio_durable._cli import _build_parser
from trio_durable._cli._options import Config, resolve
from trio_durable._cli._serve import worker_args, worker_options

from .helpers import Command, one_line_error, run

APP = """\
import attrs
import trio_durable as td


@attrs.define(eq=False)
class Room(td.DurableObject):
    async def fetch(self, request):
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        return td.Response.websocket(client)


async def worker(request, runtime):
    if request.path == "/options":
        return td.Response.json(attrs.asdict(runtime.options))
    if request.path == "/backend":
        backend = runtime.backend
        return td.Response.json(
            {"durability": backend.durability, "max_open_sql": backend.max_open_sql}
        )
    if request.is_websocket_upgrade:
        return await runtime.namespace("rooms").get_by_name("r").fetch(request)
    return td.Response.text(f"{request.method} ok")


async def authenticate(request):
    if request.query.get("token") != "sesame":
        return td.Response.text("who are you?", status=401)
    return None


app = td.App(worker=worker, objects={"rooms": Room})
"""
SERVING = r"serving optapp:app on (https?://\S+) "


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "optapp.py").write_text(APP)
    return tmp_path


@contextmanager
def serving(project: Path, *args: str) -> Iterator[str]:
    """``trio-durable serve`` in ``project`` on a free port; yields its base URL."""
    server = Command("serve", *args, "--port", "0", cwd=project)
    try:
        yield server.wait_for(SERVING).group(1)
        assert server.stop(signal.SIGTERM) == 0, server.lines
    finally:
        server.kill()


def get(url: str, context: ssl.SSLContext | None = None, data: bytes | None = None) -> Any:
    with urllib.request.urlopen(url, data=data, timeout=30, context=context) as response:
        body = response.read()
    return json.loads(body) if url.endswith(("/options", "/backend")) else body.decode()


def status_of(url: str, data: bytes) -> int:
    try:
        with urllib.request.urlopen(url, data=data, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def upgrade_status(url: str, **options: Any) -> int:
    """101 if the upgrade went through, else the refusal's status."""
    try:
        with connect(url, open_timeout=30, proxy=None, **options):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


# ---------------------------------------------------------------- sources


def test_a_flag_reaches_open_runtime(project: Path) -> None:
    with serving(project, "optapp:app", "--hibernate-after", "2.5") as base:
        assert get(base + "/options")["hibernate_after"] == 2.5, "the flag reached open_runtime"


def test_a_key_of_trio_durable_toml_reaches_open_runtime(project: Path) -> None:
    (project / "trio-durable.toml").write_text('app = "optapp:app"\nhibernate_after = 4\n')
    with serving(project) as base:
        assert get(base + "/options")["hibernate_after"] == 4, "the app and the option"


def test_the_pyproject_table_is_read_when_there_is_no_trio_durable_toml(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.trio-durable]\napp = "optapp:app"\nevict-after = 33\n'
    )
    with serving(project) as base:
        assert get(base + "/options")["evict_after"] == 33, "kebab-case keys are accepted"


def test_a_flag_overrides_the_file(project: Path) -> None:
    (project / "trio-durable.toml").write_text("hibernate_after = 4\nevict_after = 50\n")
    with serving(project, "optapp:app", "--hibernate-after", "2.5") as base:
        options = get(base + "/options")
    assert (options["hibernate_after"], options["evict_after"]) == (2.5, 50), options


def test_config_names_a_file_whose_paths_are_relative_to_it(project: Path) -> None:
    (project / "deploy").mkdir()
    (project / "deploy" / "prod.toml").write_text(
        'app = "optapp:app"\ndata_dir = "state"\nstorage_cache_bytes = 1000000\n'
    )
    with serving(project, "--config", "deploy/prod.toml") as base:
        assert get(base + "/options")["storage_cache_bytes"] == 1_000_000, "read from --config"
    assert (project / "deploy" / "state" / "trio_durable.sqlite3").exists(), (
        "data_dir is relative to the config file"
    )


def test_tune_gc_is_on_by_default_and_can_be_turned_off(project: Path) -> None:
    with serving(project, "optapp:app", "--no-tune-gc") as base:
        assert get(base + "/options")["tune_gc"] is False, "--no-tune-gc turns it off"
    with serving(project, "optapp:app") as base:
        assert get(base + "/options")["tune_gc"] is True, "a server tunes its collector"


def test_none_turns_an_optional_option_off(project: Path) -> None:
    (project / "trio-durable.toml").write_text('blocking_reset_after = "none"\n')
    with serving(project, "optapp:app", "--blocking-warning-after", "none") as base:
        options = get(base + "/options")
    assert (options["blocking_warning_after"], options["blocking_reset_after"]) == (None, None), (
        "none from the flag and from the file"
    )


# ---------------------------------------------------- serve()'s options


def test_a_serve_limit_from_the_file_is_enforced(project: Path) -> None:
    (project / "trio-durable.toml").write_text("max_body_bytes = 10\n")
    with serving(project, "optapp:app") as base:
        assert status_of(base + "/", b"x" * 5) == 200, "under max_body_bytes"
        assert status_of(base + "/", b"x" * 20) == 413, "over max_body_bytes"


def test_allowed_origins_is_a_list(project: Path) -> None:
    (project / "trio-durable.toml").write_text('allowed_origins = ["https://ok.example"]\n')
    with serving(project, "optapp:app") as base:
        ws = base.replace("http://", "ws://") + "/room"
        assert upgrade_status(ws, origin="https://ok.example") == 101, "a listed origin"
        assert upgrade_status(ws, origin="https://evil.example") == 403, "another origin"


def test_allowed_origins_flag_is_comma_separated(project: Path) -> None:
    origins = "https://a.example,https://b.example"
    with serving(project, "optapp:app", "--allowed-origins", origins) as base:
        ws = base.replace("http://", "ws://") + "/room"
        assert upgrade_status(ws, origin="https://b.example") == 101, "the second of the list"
        assert upgrade_status(ws, origin="https://c.example") == 403, "not in the list"


def test_authenticate_is_imported_like_the_app(project: Path) -> None:
    with serving(project, "optapp:app", "--authenticate", "optapp:authenticate") as base:
        ws = base.replace("http://", "ws://") + "/room"
        assert upgrade_status(ws) == 401, "refused by authenticate"
        assert upgrade_status(ws + "?token=sesame") == 101, "let through by authenticate"


def test_tls_from_certificate_and_key_files(project: Path) -> None:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    issued.cert_chain_pems[0].write_to_path(str(project / "cert.pem"))
    issued.private_key_pem.write_to_path(str(project / "key.pem"))
    (project / "trio-durable.toml").write_text(
        'ssl_certfile = "cert.pem"\nssl_keyfile = "key.pem"\n'
    )
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    with serving(project, "optapp:app") as base:
        assert base.startswith("https://127.0.0.1:"), base
        assert get(base + "/", trusting) == "GET ok", "served over TLS"
        ws = base.replace("https://", "wss://") + "/room"
        assert upgrade_status(ws, ssl=trusting) == 101, "WSS too"


# ------------------------------------------------------------ refusals


def test_an_unknown_key_is_named_with_the_close_match(project: Path) -> None:
    (project / "trio-durable.toml").write_text("hibernate_afer = 3\n")
    line = one_line_error(run("serve", "optapp:app", cwd=project))
    assert line == (
        "trio-durable: error: unknown key 'hibernate_afer' in trio-durable.toml; "
        "did you mean 'hibernate_after'?"
    ), line


def test_an_unknown_key_of_the_pyproject_table_names_the_table(project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.trio-durable]\nmax_conections = 3\n")
    line = one_line_error(run("serve", "optapp:app", cwd=project))
    assert "unknown key 'max_conections' in pyproject.toml [tool.trio-durable]" in line, line
    assert "did you mean 'max_connections'?" in line, line


def test_a_bad_value_in_the_file_is_the_records_error(project: Path) -> None:
    (project / "trio-durable.toml").write_text("hibernate_after = -3\n")
    line = one_line_error(run("serve", "optapp:app", cwd=project))
    assert line == (
        "trio-durable: error: hibernate_after must be a positive, finite number of "
        "seconds, got -3 (in trio-durable.toml)"
    ), line


def test_a_bad_value_of_a_flag_is_the_records_error(project: Path) -> None:
    line = one_line_error(run("serve", "optapp:app", "--max-connections", "0", cwd=project))
    assert "max_connections" in line and line.endswith("(from --max-connections)"), line


def test_a_wrong_type_in_the_file_is_refused(project: Path) -> None:
    (project / "trio-durable.toml").write_text('tune_gc = "yes"\n')
    line = one_line_error(run("serve", "optapp:app", cwd=project))
    assert line == (
        "trio-durable: error: tune_gc must be True or False, got 'yes' (in trio-durable.toml)"
    ), line


def test_text_that_is_no_number_is_refused_by_the_parser(project: Path) -> None:
    line = one_line_error(run("serve", "optapp:app", "--hibernate-after", "soon", cwd=project))
    assert "argument --hibernate-after: invalid float value: 'soon'" in line, line


def test_invalid_toml_is_one_line(project: Path) -> None:
    (project / "trio-durable.toml").write_text("app = optapp:app\n")
    line = one_line_error(run("serve", cwd=project))
    assert line.startswith("trio-durable: error: trio-durable.toml is not valid TOML:"), line


def test_a_missing_config_file_is_refused(project: Path) -> None:
    line = one_line_error(run("serve", "optapp:app", "--config", "nope.toml", cwd=project))
    assert line == "trio-durable: error: --config 'nope.toml': no such file", line


def test_a_missing_certificate_file_is_refused(project: Path) -> None:
    line = one_line_error(run("serve", "optapp:app", "--ssl-certfile", "missing.pem", cwd=project))
    assert line == (
        "trio-durable: error: ssl_certfile 'missing.pem': no such file (from --ssl-certfile)"
    ), line


def test_a_file_that_holds_no_certificate_is_refused(project: Path) -> None:
    (project / "cert.pem").write_text("not a certificate\n")
    line = one_line_error(run("serve", "optapp:app", "--ssl-certfile", "cert.pem", cwd=project))
    assert "cannot load the TLS certificate and key from 'cert.pem'" in line, line


def test_an_authenticate_that_cannot_be_imported_is_refused(project: Path) -> None:
    line = one_line_error(
        run("serve", "optapp:app", "--authenticate", "optapp:nobody", cwd=project)
    )
    assert line == (
        "trio-durable: error: authenticate: module 'optapp' has no attribute 'nobody'"
    ), line


def test_no_app_anywhere_says_where_to_name_it(project: Path) -> None:
    line = one_line_error(run("serve", cwd=project))
    assert "name the app: trio-durable serve MODULE:ATTRIBUTE" in line, line


def test_a_dev_only_key_in_the_dev_table_and_a_serve_only_key_refused_there(
    project: Path,
) -> None:
    (project / "trio-durable.toml").write_text("[dev]\nworkers = 2\n")
    line = one_line_error(run("serve", "optapp:app", cwd=project))
    assert (
        line == "trio-durable: error: 'workers' in [dev] of trio-durable.toml: dev does not take it"
    )


# ------------------------------------------------------ dev and workers


@pytest.mark.slow
def test_dev_reads_the_file_and_its_dev_table(project: Path) -> None:
    (project / "trio-durable.toml").write_text(
        'app = "optapp:app"\nhibernate_after = 4\nevict_after = 50\n\n[dev]\nhibernate_after = 1\n'
    )
    dev = Command("dev", "--port", "0", cwd=project)
    try:
        base = dev.wait_for(SERVING).group(1)
        options = get(base + "/options")
        assert dev.stop(signal.SIGTERM) == 0, dev.lines
    finally:
        dev.kill()
    assert (options["hibernate_after"], options["evict_after"]) == (1, 50), (
        "[dev] overrides the top level for dev"
    )


def test_workers_get_the_options_on_their_command_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    given = _build_parser().parse_args(["serve", "optapp:app", "--hibernate-after", "3"])
    flag, text = worker_args(resolve("serve", given))
    assert flag == "--options", flag
    assert Config.from_json(text).runtime_kwargs()["hibernate_after"] == 3, "the option travels"
    plain = _build_parser().parse_args(["serve", "optapp:app", "--workers", "2", "--port", "0"])
    assert worker_args(resolve("serve", plain)) == (), "nothing to pass: no --options"


@pytest.mark.slow
def test_every_worker_of_a_cluster_opens_its_runtime_with_the_options(project: Path) -> None:
    (project / "trio-durable.toml").write_text("evict_after = 40\n")
    with serving(project, "optapp:app", "--workers", "2", "--hibernate-after", "2.5") as base:
        seen = {
            (o["hibernate_after"], o["evict_after"])
            for o in (get(base + "/options") for _ in range(8))
        }
    assert seen == {(2.5, 40)}, f"every answer, from either worker: {seen}"


# ------------------------------------------------- the embedded storage's options


def resolved(project: Path, monkeypatch: pytest.MonkeyPatch, *argv: str) -> Config:
    """``serve ARGV``'s settings, resolved in ``project`` (no process)."""
    monkeypatch.chdir(project)
    return resolve("serve", _build_parser().parse_args(["serve", "optapp:app", *argv]))


def test_storage_options_from_a_flag_and_the_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolved(project, monkeypatch).backend_kwargs() == {
        "durability": "process",
        "max_open_sql": 256,
    }, "the backend's defaults"
    (project / "trio-durable.toml").write_text('durability = "power"\nmax-open-sql = 8\n')
    assert resolved(project, monkeypatch).backend_kwargs() == {
        "durability": "power",
        "max_open_sql": 8,
    }, "from the file"
    config = resolved(project, monkeypatch, "--durability", "process", "--max-open-sql", "3")
    assert config.backend_kwargs() == {"durability": "process", "max_open_sql": 3}, "flags win"


def test_storage_options_travel_to_a_child_as_json(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = resolved(project, monkeypatch, "--durability", "power")
    assert worker_options(config.to_json())[2] == {"durability": "power", "max_open_sql": 256}
    assert worker_options(None)[2] == {}, "no --options: the backend's defaults"


def test_a_bad_durability_in_the_file_is_named(project: Path) -> None:
    (project / "trio-durable.toml").write_text('durability = "fsync"\n')
    line = one_line_error(run("serve", "optapp:app", cwd=project))
    assert line == (
        "trio-durable: error: durability must be 'process' or 'power', got 'fsync'"
        " (in trio-durable.toml)"
    ), line


def test_a_bad_durability_flag_is_refused_by_the_parser(project: Path) -> None:
    line = one_line_error(run("serve", "optapp:app", "--durability", "fsync", cwd=project))
    assert "argument --durability: invalid choice: 'fsync'" in line, line


def test_max_open_sql_must_be_a_positive_int(project: Path) -> None:
    line = one_line_error(run("serve", "optapp:app", "--max-open-sql", "0", cwd=project))
    assert line == (
        "trio-durable: error: max_open_sql must be positive, got 0 (from --max-open-sql)"
    ), line
    (project / "trio-durable.toml").write_text('max_open_sql = "many"\n')
    line = one_line_error(run("serve", "optapp:app", cwd=project))
    assert line == (
        "trio-durable: error: max_open_sql must be an int, got 'many' (in trio-durable.toml)"
    ), line


def test_storage_options_are_refused_with_a_database(project: Path) -> None:
    line = one_line_error(
        run(
            "serve",
            "optapp:app",
            "--database",
            "postgresql://nobody@127.0.0.1:1/none",
            "--durability",
            "power",
            cwd=project,
        )
    )
    assert line == (
        "trio-durable: error: durability is an option of the SQLite storage of --data-dir,"
        " not of --database (from --durability)"
    ), line


def test_storage_options_reach_the_backend(project: Path) -> None:
    (project / "trio-durable.toml").write_text("max_open_sql = 8\n")
    with serving(project, "optapp:app", "--durability", "power") as base:
        assert get(base + "/backend") == {"durability": "power", "max_open_sql": 8}
    (project / "trio-durable.toml").unlink()
    with serving(project, "optapp:app") as base:
        assert get(base + "/backend") == {"durability": "process", "max_open_sql": 256}


@pytest.mark.slow
def test_storage_options_reach_every_workers_backend(project: Path) -> None:
    with serving(project, "optapp:app", "--workers", "2", "--durability", "power") as base:
        seen = {json.dumps(get(base + "/backend"), sort_keys=True) for _ in range(8)}
    assert seen == {json.dumps({"durability": "power", "max_open_sql": 256}, sort_keys=True)}
