"""``runguard serve``'s configuration: flags, then the environment (as the seed), then defaults."""

from __future__ import annotations

import pytest

from runguard.server.cli import _parser, build_config, main
from runguard.server.config import ServerConfig


def configure(*flags: str, env: dict[str, str] | None = None) -> ServerConfig:
    """The config ``runguard serve FLAGS`` builds with the environment ``env``."""
    return build_config(_parser().parse_args(["serve", *flags]), env or {})


def test_defaults_without_flags_or_environment() -> None:
    """With nothing set, serve uses the seed's 5 s dedup window and 1800 s max run time."""
    config = configure()
    assert config.dedup_window == 5.0
    assert config.max_ttl == 1800.0
    assert config == ServerConfig()


def test_seed_environment_variables_keep_their_meaning() -> None:
    """RUN_DEDUP_WINDOW_SECS is the dedup window and RUN_MAX_SECS the longest (default) lease."""
    config = configure(env={"RUN_DEDUP_WINDOW_SECS": "2.5", "RUN_MAX_SECS": "60"})
    assert config.dedup_window == 2.5
    assert config.max_ttl == 60.0
    assert config.policy("g").max_ttl == 60.0


def test_zero_dedup_window_from_the_environment_disables_dedup() -> None:
    """RUN_DEDUP_WINDOW_SECS=0 is honoured (not mistaken for unset), as in the seed."""
    assert configure(env={"RUN_DEDUP_WINDOW_SECS": "0"}).dedup_window == 0.0


def test_runguard_variables_give_listen_and_store() -> None:
    """RUNGUARD_LISTEN and RUNGUARD_STORE set the listen address and store URL."""
    config = configure(
        "--insecure", env={"RUNGUARD_LISTEN": "0.0.0.0:7000", "RUNGUARD_STORE": "memory://x"}
    )
    assert config.listen == "0.0.0.0:7000"
    assert config.store_url == "memory://x"


def test_flags_win_over_the_environment() -> None:
    """A flag overrides the matching environment variable."""
    env = {
        "RUN_DEDUP_WINDOW_SECS": "9",
        "RUN_MAX_SECS": "99",
        "RUNGUARD_LISTEN": "0.0.0.0:7000",
        "RUNGUARD_STORE": "memory://env",
    }
    config = configure(
        "--dedup-window",
        "1",
        "--max-ttl",
        "10",
        "--listen",
        "127.0.0.1:0",
        "--store",
        "memory://flag",
        env=env,
    )
    assert (config.dedup_window, config.max_ttl) == (1.0, 10.0)
    assert (config.listen, config.store_url) == ("127.0.0.1:0", "memory://flag")


def test_other_flags_reach_the_config() -> None:
    """Every serve flag sets its field."""
    config = configure(
        "--default-capacity",
        "3",
        "--max-wait",
        "20",
        "--max-queue",
        "7",
        "--progress-interval",
        "0.5",
        "--shutdown-grace",
        "2",
        "--max-connection-age",
        "600",
        "--max-connection-age-grace",
        "12",
    )
    assert config.default_capacity == 3
    assert (config.max_wait, config.max_queue) == (20.0, 7)
    assert (config.progress_interval, config.shutdown_grace) == (0.5, 2.0)
    assert (config.max_connection_age, config.max_connection_age_grace) == (600.0, 12.0)


def test_repeated_guard_flags_set_each_capacity() -> None:
    """--guard NAME=N may repeat; each named guard gets its capacity, others the default."""
    config = configure("--guard", "generate=2", "--guard", "export=4")
    assert dict(config.capacities) == {"generate": 2, "export": 4}
    assert config.policy("generate").capacity == 2
    assert config.policy("export").capacity == 4
    assert config.policy("other").capacity == 1


@pytest.mark.parametrize(
    "variable",
    [
        pytest.param("RUN_DEDUP_WINDOW_SECS", id="dedup"),
        pytest.param("RUN_MAX_SECS", id="max-secs"),
    ],
)
def test_non_numeric_environment_value_names_the_variable(variable: str) -> None:
    """A variable that is not a number raises ValueError naming it."""
    with pytest.raises(ValueError, match=rf"^{variable}='five' is not a number"):
        configure(env={variable: "five"})


def test_out_of_range_environment_value_is_refused() -> None:
    """RUN_MAX_SECS=0 reaches ServerConfig's validation, which names max_ttl."""
    with pytest.raises(ValueError, match=r"^max_ttl"):
        configure(env={"RUN_MAX_SECS": "0"})


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x", id="no-equals"),
        pytest.param("x=", id="no-number"),
        pytest.param("x=two", id="word"),
        pytest.param("x=-1", id="negative"),
        pytest.param("x=1.5", id="fraction"),
    ],
)
def test_malformed_guard_flag_exits_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A --guard that is not NAME=N is a usage error: argparse exits 2 and says why."""
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--guard", value])
    assert exited.value.code == 2
    assert "expected GUARD=CAPACITY" in capsys.readouterr().err


def test_invalid_config_from_flags_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A well-formed flag with a bad value returns 2 with the config's message, serving nothing."""
    assert main(["serve", "--guard", "x=0"]) == 2
    assert "capacities: x must be 1 to 65535" in capsys.readouterr().err


def test_bad_environment_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """main reads the real environment; a bad RUN_MAX_SECS returns 2 and names it."""
    monkeypatch.setenv("RUN_MAX_SECS", "thirty")
    assert main(["serve"]) == 2
    assert "RUN_MAX_SECS='thirty' is not a number" in capsys.readouterr().err


def test_missing_verb_exits_2() -> None:
    """runguard with no verb is a usage error."""
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
