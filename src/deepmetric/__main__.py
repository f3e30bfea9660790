"""``python -m deepmetric``: the same as the ``deepmetric`` command."""

import sys

from deepmetric.cli import main

sys.exit(main())
