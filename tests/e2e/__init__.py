"""End-to-end checks of the whole path (not shipped in the package; imported as ``e2e.<name>`` with tests/ on sys.path)."""
