"""Stubs: RPC to public async methods, fetch, and refusals."""

from __future__ import annotations

import pytest

import trio_durable as td

from .objects import constructed


async def test_getting_a_stub_creates_nothing(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters").get_by_name("lazy")
    assert stub.name == "lazy", "stub.name is the ID's name"
    assert stub.id == runtime.namespace("counters").id_from_name("lazy")
    assert runtime.statistics().activations == 0, "a stub must not activate the object"
    assert constructed.get("Counter", 0) == 0, "no constructor may run for a stub"


async def test_rpc_passes_args_and_kwargs_and_returns_result(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    result = await stub.echo(1, "two", three=[3])
    assert result == ((1, "two"), {"three": [3]}), f"unexpected RPC result {result!r}"


async def test_rpc_state_lives_in_one_instance(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    values = [await stub.increment() for _ in range(3)]
    assert values == [1, 2, 3], "calls must reach the same live instance"
    other = runtime.namespace("counters").get_by_name("b")
    assert await other.increment() == 1, "another ID is another instance"


async def test_fetch_round_trip(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    response = await stub.fetch(td.Request(method="post", url="http://x/hello?q=1"))
    assert response.status == 200
    assert response.body == b"POST /hello hits=0", f"got {response.body!r}"


async def test_fetch_refuses_non_request(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    with pytest.raises(TypeError, match="takes a trio_durable.Request"):
        await stub.fetch("http://x/")  # type: ignore[arg-type]


async def test_fetch_returning_non_response_is_type_error(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    with pytest.raises(TypeError, match="not a trio_durable.Response"):
        await stub.fetch(td.Request(url="http://x/bad"))


async def test_fetch_on_class_without_fetch_is_refused(runtime: td.Runtime) -> None:
    with pytest.raises(AttributeError, match="Worker has no method 'fetch'"):
        await runtime.namespace("workers").get_by_name("a").fetch(td.Request())


@pytest.mark.parametrize("handler", ["alarm", "websocket_message"])
async def test_handlers_are_not_callable_through_a_stub(runtime: td.Runtime, handler: str) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    with pytest.raises(TypeError, match=f"Counter.{handler} is an event handler"):
        getattr(stub, handler)
    assert runtime.statistics().activations == 0, "a refused call must not activate the object"


async def test_private_names_are_refused(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    with pytest.raises(AttributeError, match="'_private' is private"):
        stub._private  # noqa: B018


async def test_sync_methods_and_missing_names_are_refused(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    with pytest.raises(TypeError, match="sync_method is not an async method"):
        stub.sync_method  # noqa: B018
    with pytest.raises(AttributeError, match="Counter has no method 'nope'"):
        stub.nope  # noqa: B018
    with pytest.raises(TypeError, match="hits is not an async method"):
        stub.hits  # noqa: B018


async def test_unknown_namespace_lists_known_ones(runtime: td.Runtime) -> None:
    with pytest.raises(KeyError, match="no namespace 'nope'; this runtime has: broken, counters"):
        runtime.namespace("nope")
