"""Gap recovery: CDRs Asterisk wrote to Master.csv while no AMI client was listening.

- `lines`: Master.csv lines → outbox rows (identity, occurrence number of identical lines, date cut).
- `tail`: the file side (complete lines only, reading back, rotated files, line counts).
- `time_match`: is a CSV row an AMI CDR with its times shifted (a wrong CDR_BACKFILL_CSV_GMT or
  ASTERISK_TZ)? The pure decision, the fix to print, the verdict over the file's last lines.
- `twins`: read-only look-ups of the AMI CDRs stored under the UniqueIDs of CSV rows.
- `guard`: `TimeGuard`, which keeps such rows out of the outbox and warns.
- `follower`: `CsvFollower`, the `tail -F` task of `connector run`.
- `command`: `connector backfill`, the one-off import.
"""
