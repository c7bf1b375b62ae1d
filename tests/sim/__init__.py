"""Tests of connector.sim."""
