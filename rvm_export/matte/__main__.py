"""``python -m rvm_export.matte INPUT --model M ...`` (the same as ``rvm-export matte`` once mounted)."""
import sys

from .cli import main

sys.exit(main())
