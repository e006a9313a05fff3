"""``python -m cim.cli <command> ...``: the same as ``cim <command> ...`` (child processes use this form)."""
import sys

from cim.cli import main

sys.exit(main())
