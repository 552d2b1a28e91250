"""Adopting the store's guard settings at start.

Guard settings are the store's: at start the server proposes its flags as the
store-wide defaults and as the settings of the guards its flags name; what the
store already holds wins, and a flag that says otherwise is logged as a
``policy_mismatch`` warning.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from runguard.server.config import ServerConfig
from runguard.server.core import GuardSettings
from runguard.server.stores import Store

__all__ = ["adopt_defaults", "adopt_guards"]

Configure = Callable[[str, GuardSettings], Awaitable[object]]
"""Give a guard settings of its own, through the command path."""

log = structlog.get_logger("runguard")


async def adopt_defaults(config: ServerConfig, store: Store) -> GuardSettings:
    """The store-wide defaults: the store's, or the flags' when it has none yet."""
    proposed = config.default_settings
    stored = await store.defaults(proposed)
    _warn_mismatch(
        "",
        stored,
        proposed,
        ("capacity", "dedup_window", "max_queue"),
        "the store's defaults are enforced (written by the first server on the store; "
        "give a guard settings of its own with runguard configure)",
    )
    return stored


async def adopt_guards(
    config: ServerConfig, store: Store, defaults: GuardSettings, configure: Configure
) -> None:
    """Give each guard the flags name the flags' capacity, unless the store has its settings."""
    for guard, capacity in sorted(config.capacities.items()):
        wanted = GuardSettings(
            capacity=capacity,
            dedup_window=defaults.dedup_window,
            max_queue=defaults.max_queue,
        )
        doc = (await store.read(guard)).doc
        if doc.settings is None:
            await configure(guard, wanted)
        else:  # --guard names a capacity only
            _warn_mismatch(
                guard,
                doc.settings,
                wanted,
                ("capacity",),
                f"guard {guard!r} keeps its stored settings "
                f"(change them with runguard configure {guard})",
            )


def _warn_mismatch(
    guard: str,
    stored: GuardSettings,
    flags: GuardSettings,
    names: tuple[str, ...],
    outcome: str,
) -> None:
    for name in names:
        have, told = getattr(stored, name), getattr(flags, name)
        if have != told:
            log.warning(
                "policy_mismatch",
                guard=guard or None,
                setting=name,
                stored=have,
                flag=told,
                detail=f"the store says {name}={have}, this server's flags say {told}: " + outcome,
            )
