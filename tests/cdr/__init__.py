"""Tests of connector.cdr."""
