"""``python -m cim.service --params FILE [--host H] [--port N] [key=value ...]``: the reward service in a child
process (:func:`cim.service.run.main`; what :func:`cim.service.process.start` runs)."""
import sys

from cim.service.run import main

sys.exit(main())
