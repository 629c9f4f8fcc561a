"""Every module in tests/fixtures/ is a pytest plugin: real servers on free loopback ports."""

from pathlib import Path

# ports first: the other fixture modules import it, and a plugin must be registered before its import
pytest_plugins = ["tests.fixtures.ports"] + sorted(
    f"tests.fixtures.{path.stem}" for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if path.stem not in ("__init__", "ports")
)
