"""Test suite; a package so that ``from tests.fakes import FakeGenerator`` works under bare ``pytest``."""
