"""``python -m pe_dense``: the ``pe-dense`` command."""

import sys

from .cli import main

sys.exit(main())
