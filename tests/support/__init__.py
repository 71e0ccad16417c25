"""Helpers shared by the tests, one module per concern. Test modules import from here,
never from another test module or a conftest."""
