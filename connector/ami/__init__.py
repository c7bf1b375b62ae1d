"""Receiving CDRs from Asterisk over AMI.

- `protocol`: the wire protocol (framing, decoding, ordered headers), panoramisk's with its defects fixed.
- `session`: one connection: connect, log in, actions and their responses.
- `client`: `AmiClient`, the one owner of the connection: reconnects, keepalive, gap accounting.
- `ingest`: Cdr event → outbox row, and `CdrWriter`, the buffered group-commit writer with backpressure.
"""
