"""Test support: the one home of fixtures (fixtures.py, registered for the whole tree by the root
conftest.py) and of the helpers tests and benchmarks share (reference data, example directories,
models for the serving tests). Production packages never import this package."""
