"""``python -m pub_optax``: the same as the ``pub-optax`` command."""

import sys

from pub_optax.ranking.cli import main

sys.exit(main())
