"""Gap recovery: CDRs Asterisk wrote to Master.csv while no AMI client was listening.

- `lines`: Master.csv lines → outbox rows (identity, occurrence number of identical lines, date cut).
- `tail`: the file side (complete lines only, reading back, rotated files, line counts).
- `follower`: `CsvFollower`, the `tail -F` task of `connector run`.
- `command`: `connector backfill`, the one-off import.
"""
