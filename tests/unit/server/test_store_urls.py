"""Store URLs: a malformed one is refused before anything is opened or contacted."""

from __future__ import annotations

import pytest

from runguard.server.stores import open_store


@pytest.mark.parametrize(
    ("url", "says"),
    [
        pytest.param("sqlite://host/x.db", "sqlite", id="sqlite-host"),
        pytest.param("sqlite://", "sqlite", id="sqlite-no-path"),
        pytest.param("sqlite:///x.db?mode=ro", "option", id="sqlite-unknown-option"),
        pytest.param("sqlite:///x.db?synchronous=off", "synchronous", id="sqlite-bad-synchronous"),
        pytest.param("etcd://", "etcd", id="etcd-no-endpoint"),
        pytest.param("etcd://host/x", "etcd", id="etcd-no-port"),
        pytest.param("etcd://h:1/x?bogus=1", "option", id="etcd-unknown-option"),
        pytest.param("etcd://h:1/x?timeout=-1", "timeout", id="etcd-bad-timeout"),
    ],
)
def test_malformed_store_urls_are_refused(url: str, says: str) -> None:
    """A malformed store URL is a ValueError whose message names what is wrong."""
    with pytest.raises(ValueError, match=says):
        open_store(url)
