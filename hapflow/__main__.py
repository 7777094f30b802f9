"""``python -m hapflow``: the ``hapflow`` command (:mod:`hapflow.cli`)."""

import sys

from hapflow.cli import main

sys.exit(main())
