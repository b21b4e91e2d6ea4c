"""testinfra checks of a real deployment (a package, so its conftest does not shadow tests/conftest.py)."""
