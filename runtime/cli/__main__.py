"""``python -m retiarii_ir.runtime.cli``: the ``retiarii`` command."""

import sys

from .main import main

sys.exit(main())
