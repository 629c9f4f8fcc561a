"""Every module in tests/fixtures/ is a pytest plugin: real servers on free loopback ports."""

from pathlib import Path

# ports first: the other fixture modules import it, and a plugin must be registered before its import
_FIXTURES = sorted(path.stem for path in (Path(__file__).parent / "fixtures").glob("*.py"))
pytest_plugins = ["tests.fixtures.ports", *(f"tests.fixtures.{name}" for name in _FIXTURES
                                            if name not in ("__init__", "ports"))]
