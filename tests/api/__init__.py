"""Tests of connector.api."""
