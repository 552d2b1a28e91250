"""The keywords of ``begin`` and ``run``, written once as ``BeginOptions``, as both clients
take them."""

from __future__ import annotations

from typing import Any

import pytest

from runguard.client import AsyncClient, BeginOptions, Client
from runguard.client._shared import begin_request

NOWHERE = "127.0.0.1:1"


def test_every_option_reaches_the_request() -> None:
    """Each BeginOptions keyword lands in its field of the BeginRequest."""
    options = BeginOptions(
        route="/r", payload={"n": 1}, operation_id="op", ttl=2.5, wait=1.0, labels={"a": "b"}
    )
    request = begin_request("g", **options)
    assert (request.guard, request.route, request.operation_id) == ("g", "/r", "op")
    assert request.payload.struct_value["n"] == 1
    assert request.ttl.ToMilliseconds() == 2500
    assert request.wait.ToMilliseconds() == 1000
    assert dict(request.labels) == {"a": "b"}


def test_left_out_options_are_the_defaults() -> None:
    """No keyword at all is an empty route, no payload, a fresh operation_id, no ttl or wait."""
    request = begin_request("g")
    assert request.route == ""
    assert not any(request.HasField(name) for name in ("payload", "ttl", "wait"))
    assert len(request.operation_id) == 32


def test_a_misspelt_keyword_is_refused_by_the_sync_client() -> None:
    """Client.begin and Client.run refuse a keyword BeginOptions lacks, before any call."""
    wrong: dict[str, Any] = {"rout": "/r"}
    with Client(NOWHERE) as client:
        with pytest.raises(TypeError, match="rout"):
            client.begin("g", **wrong)
        with pytest.raises(TypeError, match="rout"), client.run("g", **wrong):
            pass  # pragma: no cover - the Begin is refused first


async def test_a_misspelt_keyword_is_refused_by_the_async_client() -> None:
    """AsyncClient.begin and AsyncClient.run refuse a keyword BeginOptions lacks too."""
    wrong: dict[str, Any] = {"rout": "/r"}
    async with AsyncClient(NOWHERE) as client:
        with pytest.raises(TypeError, match="rout"):
            await client.begin("g", **wrong)
        with pytest.raises(TypeError, match="rout"):
            async with client.run("g", **wrong):
                pass  # pragma: no cover - the Begin is refused first
