"""Real loopback servers used by the tests."""
