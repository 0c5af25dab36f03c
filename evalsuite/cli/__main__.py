"""``python -m evalsuite.cli``: the ``evalsuite`` command."""

import sys

from evalsuite.cli import main

if __name__ == "__main__":
    sys.exit(main())
