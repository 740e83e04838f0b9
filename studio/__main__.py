"""``python -m studio`` runs the command line."""

import sys

from studio.cli import main

sys.exit(main())
