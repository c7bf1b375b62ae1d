"""Every Prometheus metric the connector exports, in one registry.

Modules import the metric objects from here; nothing else creates metrics, so the exported set is
exactly this file (deploy files and tests check their references against `exported_metric_names`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from connector import __version__

REGISTRY = CollectorRegistry(auto_describe=True)

BUILD_INFO = Info("connector_build", "Connector build information", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})

# AMI listener and ingest
AMI_CONNECTION_STATUS = Gauge(
    "ami_connection_status", "1 while an AMI session is logged in, else 0", registry=REGISTRY
)
AMI_DISCONNECTIONS = Counter("ami_disconnections_total", "AMI sessions lost or refused", registry=REGISTRY)
AMI_DISCONNECTED_SECONDS = Counter(
    "ami_disconnected_seconds_total",
    "Time without an AMI session (events of this period were not sent by Asterisk)",
    registry=REGISTRY,
)
AMI_LOGIN_FAILURES = Counter("ami_login_failures_total", "AMI logins refused by Asterisk", registry=REGISTRY)
AMI_FRAMES_MALFORMED = Counter(
    "ami_frames_malformed_total", "AMI frames that could not be parsed whole", registry=REGISTRY
)
AMI_CALLBACK_ERRORS = Counter(
    "ami_callback_errors_total", "Errors raised while handling an AMI event", registry=REGISTRY
)
CDRS_RECEIVED = Counter("cdrs_received_total", "Cdr events read from AMI", registry=REGISTRY)
CDRS_STORED = Counter(
    "cdrs_stored_total", "CDRs committed to the outbox (duplicates excluded)", registry=REGISTRY
)
CDRS_DUPLICATE = Counter(
    "cdrs_duplicate_total", "CDRs already in the outbox, not stored again", registry=REGISTRY
)
CDRS_DROPPED = Counter(
    "cdrs_dropped_total",
    "CDRs lost because the outbox could not be written and the memory buffer was full",
    registry=REGISTRY,
)
INGEST_BUFFER_ROWS = Gauge(
    "ingest_buffer_rows", "CDRs read but not yet committed to the outbox", registry=REGISTRY
)
OUTBOX_WRITE_ERRORS = Counter(
    "outbox_write_errors_total", "Failed attempts to commit rows to the outbox", registry=REGISTRY
)

# CDR delivery
CDRS_PROCESSED = Counter(
    "cdrs_processed_total", "CDRs taken from the outbox by the drainer", registry=REGISTRY
)
CDRS_SENT = Counter("cdrs_sent_total", "CDRs delivered to the API", registry=REGISTRY)
CDRS_FAILED = Counter("cdrs_failed_total", "CDRs rejected by the API", registry=REGISTRY)
CDR_FILTERED = Counter(
    "asterisk_cdr_filtered_total", "CDRs excluded by a filter", ["reason"], registry=REGISTRY
)
CDR_QUEUE_DEPTH = Gauge("asterisk_cdr_queue_depth", "Pending CDR rows", registry=REGISTRY)
CDR_OLDEST_PENDING_AGE = Gauge(
    "cdr_oldest_pending_age_seconds", "Age of the oldest pending CDR", registry=REGISTRY
)
API_REQUEST_DURATION = Histogram(
    "api_request_duration_seconds",
    "API request latency",
    ["endpoint", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
API_AUTH_FAILURES = Counter(
    "api_auth_failures_total", "API answers refusing the key (401/403)", registry=REGISTRY
)

# Gap recovery (the Master.csv follower, `connector backfill`, the CDR database follower)
CDRS_RECOVERED = Counter(
    "cdrs_recovered_total",
    "CDRs AMI did not deliver, stored from the CSV file (source=csv) or the CDR database (source=db)",
    ["source"],
    registry=REGISTRY,
)
for _source in ("csv", "db"):
    CDRS_RECOVERED.labels(source=_source)  # both series exist from the start, at 0
BACKFILL_DB_LAG = Gauge(
    "backfill_db_lag_seconds",
    "Age of the newest CDR the database follower has read (its lag behind the CDR table)",
    registry=REGISTRY,
)
BACKFILL_DB_ERRORS = Counter(
    "backfill_db_errors_total",
    "Failed reads of the CDR database (server down, login refused, table missing); each is retried",
    registry=REGISTRY,
)
BACKFILL_LAG_BYTES = Gauge(
    "backfill_lag_bytes", "Bytes of the CSV file not yet read by the follower", registry=REGISTRY
)
BACKFILL_MALFORMED = Counter(
    "backfill_malformed_total", "CSV lines skipped because they could not be parsed", registry=REGISTRY
)

# Recordings
RECORDINGS_DETECTED = Counter(
    "recordings_detected_total", "Finished recordings stored in the outbox", registry=REGISTRY
)
RECORDINGS_UPLOADED = Counter(
    "recordings_uploaded_total", "Recordings delivered to the API", registry=REGISTRY
)
RECORDINGS_FAILED = Counter("recordings_failed_total", "Recordings rejected or unreadable", registry=REGISTRY)
RECORDING_UPLOAD_BYTES = Counter(
    "recording_upload_bytes_total", "Recording bytes delivered", registry=REGISTRY
)
RECORDING_QUEUE_DEPTH = Gauge("recording_queue_depth", "Pending recording rows", registry=REGISTRY)

# Outbox and host
OUTBOX_ROWS = Gauge("outbox_rows", "Outbox rows", ["table", "state"], registry=REGISTRY)
OUTBOX_OLDEST_PENDING_AGE = Gauge(
    "outbox_oldest_pending_age_seconds",
    "Age of the oldest pending row",
    ["table"],
    registry=REGISTRY,
)
OUTBOX_DB_BYTES = Gauge("outbox_db_bytes", "Size of the outbox database with its WAL", registry=REGISTRY)
OUTBOX_QUARANTINED = Counter(
    "outbox_quarantined_total",
    "Damaged outbox files moved aside at start (connector salvage FILE recovers their rows)",
    registry=REGISTRY,
)
DATA_DIR_FREE_BYTES = Gauge("data_dir_free_bytes", "Free space in DATA_DIR", registry=REGISTRY)
# Written by the ingest writer (connector.ami.ingest) only: it is the one that writes the outbox.
OUTBOX_WRITABLE = Gauge(
    "outbox_writable", "1 while the last outbox write succeeded, else 0", registry=REGISTRY
)
# Written by the retention pass of `connector run` (connector.outbox.retention) only.
OUTBOX_PURGED_ROWS = Counter(
    "outbox_purged_rows",
    "Sent and filtered rows deleted by retention (age or size bound)",
    ["table"],
    registry=REGISTRY,
)
OUTBOX_MAX_BYTES = Gauge(
    "outbox_max_bytes", "The outbox size bound (OUTBOX_MAX_MB in bytes; 0: no bound)", registry=REGISTRY
)
OUTBOX_OVER_BOUND = Gauge(
    "outbox_over_bound",
    "1 while pending and failed rows alone use more than the size bound, else 0",
    registry=REGISTRY,
)


def exported_metric_names() -> set[str]:
    """Every sample name /metrics can expose (counters with _total, histograms with suffixes)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "info": ("_info",),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names
