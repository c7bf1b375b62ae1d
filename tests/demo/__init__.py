"""Tests of connector/demo: the simulators `connector demo` runs, and the tests' doubles of them."""
