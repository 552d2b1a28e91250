"""``python -m runguard.server``: the same as the ``runguard`` command."""

import sys

from runguard.server.entry import main

sys.exit(main())
