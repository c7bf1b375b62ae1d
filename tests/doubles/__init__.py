"""Test doubles: the demo's simulators with the switches only tests and benchmarks use."""
