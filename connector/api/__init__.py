"""The regional API.

- `client`: `ApiClient`: CDR batches, recording uploads, health; every answer classified once.
- `multipart`: the streamed multipart body of a recording upload, read off the event loop.
"""
