"""``python -m rvm_export.cli ...``: the same as the ``rvm-export`` command."""
import sys

from . import main

sys.exit(main())
