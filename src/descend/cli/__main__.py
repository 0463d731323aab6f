"""``python -m descend.cli``: the ``descend`` command (what data-parallel workers run)."""

import sys

from . import main

sys.exit(main())
