"""Asterisk CDR & recording connector: a durable store-and-forward pipeline backed by SQLite."""

__version__ = "0.1.0"
