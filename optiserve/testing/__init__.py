"""Conformance suites that every runtime and result store must pass (needs pytest)."""
