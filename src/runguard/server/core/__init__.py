"""The pure core of RunGuard: every rule of a guard, and nothing else.

No grpc, no asyncio, no clock, no storage: each transition takes a guard's
document, its policy, a command and ``now`` and returns the new document, the
outcome and the changes it made. Randomness (lease tokens, server-made
operation_ids) comes in with the command, so the core is deterministic.

Its public names are those its modules list in their ``__all__``: ``model``
(the values), ``transitions`` (every rule), ``work`` (what the rules share: a
document being changed, and the :class:`Transition` it comes to) and
``history`` (the change log).
"""

from runguard.server.core import history, model, transitions, work

# Each module's __all__ is its public surface; the package re-exports them whole,
# so a new name is listed once, where it is defined.
from runguard.server.core.history import *  # noqa: F403
from runguard.server.core.model import *  # noqa: F403
from runguard.server.core.transitions import *  # noqa: F403
from runguard.server.core.work import *  # noqa: F403

__all__ = [*history.__all__, *model.__all__, *transitions.__all__, *work.__all__]
