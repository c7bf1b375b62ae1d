# SIPSTACK connector for Asterisk: `docker build -t sipstack/connector-asterisk .`
# Run it with deploy/docker-compose.yml (Method A) or `docker run` (Method B): see README.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DATA_DIR=/data

# A fixed uid/gid so a bind-mounted DATA_DIR can be chown'ed to it on the host (10001:10001).
RUN groupadd --system --gid 10001 connector \
    && useradd --system --uid 10001 --gid connector --create-home --home-dir /home/connector \
       --shell /usr/sbin/nologin connector \
    && mkdir /data \
    && chown connector:connector /data

# Only what the package build needs (pyproject names README.md as its readme).
WORKDIR /build
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY migrations ./migrations
# Both database drivers, for gap recovery from FreePBX's MariaDB or a cdr_pgsql PostgreSQL.
RUN pip install --no-cache-dir '.[mysql,postgres]' && rm -rf build ./*.egg-info

# Not /data: pydantic-settings reads a `.env` in the working directory, and the volume is the user's.
WORKDIR /home/connector
USER connector

# Created after the chown above, so a new named volume starts out owned by the connector user.
VOLUME ["/data"]
EXPOSE 8000

# Asks /healthz on MONITORING_HOST:MONITORING_PORT (a wildcard address is asked on loopback); with
# MONITORING_ENABLED=false there is no endpoint, so there is nothing to check. No curl in the image.
# Timing: Docker runs the first check one --interval after start, so 5 s makes the container healthy
# ~5 s after `docker run` (for `compose up --wait` and `condition: service_healthy`). --start-interval
# (Docker 25+) is not used: older builders, 20.10 included, reject the flag. The cost of a check every
# 5 s is one short python process (tens of milliseconds of CPU); its HTTP timeout (2 s) stays under
# --timeout. Failures in the first 60 s (start-up) do not count; after that it takes 6 failures in a
# row (~30 s) to mark the container unhealthy, so one slow answer does not.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=6 \
    CMD ["python", "-c", "import http.client, os, sys; env = os.environ; sys.excepthook = lambda kind, error, tb: print('unhealthy:', kind.__name__, error); off = env.get('MONITORING_ENABLED', 'true').strip().lower() in ('0', 'false', 'no', 'off', 'f', 'n'); off and sys.exit(0); host = env.get('MONITORING_HOST', '').strip().strip('[]') or '0.0.0.0'; host = {'0.0.0.0': '127.0.0.1', '::': '::1'}.get(host, host); port = int(env.get('MONITORING_PORT', '').strip() or 8000); conn = http.client.HTTPConnection(host, port, timeout=2); conn.request('GET', '/healthz'); status = conn.getresponse().status; print('healthz:', status); sys.exit(0 if status == 200 else 1)"]

# Exec form: the connector is the container's main process and receives SIGTERM from `docker stop`.
ENTRYPOINT ["connector"]
CMD ["run"]
