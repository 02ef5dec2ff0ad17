"""The conformance suites; installed as ``pytest_lfm.conformance`` (``pytest --pyargs pytest_lfm.conformance``)."""
