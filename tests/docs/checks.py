"""What the pages' blocks must print, beyond running: one function per page, by file name.

A check gets the outcomes of the page's blocks by ``id`` marker and asserts what the page
promises its reader. See docs/WRITING.md.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.docs.runner import Outcome

Outcomes = dict[str, Outcome]

CHECKS: dict[str, Callable[[Outcomes], None]] = {}
