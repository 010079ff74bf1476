# The replog image: one console script, `replog`, runs every role (master, secondary) and the client commands.
#
#   docker build -t replog .
#   docker run --rm -p 127.0.0.1:8000:8000 -e REPLOG_CLUSTER_KEY=… replog master --secondary http://…
#
# Inside a container a node listens on 0.0.0.0:8000 (REPLOG_HOST, REPLOG_PORT: set the port through
# REPLOG_PORT, which the HEALTHCHECK probes, not --port) and keeps its log in the volume /data
# (REPLOG_DATA_DIR). It runs as the unprivileged user `replog`. compose.yaml runs the classic deployment.
# Listening beyond loopback, a node needs the cluster key (--cluster-key-file / REPLOG_CLUSTER_KEY_FILE, or
# REPLOG_CLUSTER_KEY) or it refuses to start (protected mode; --insecure overrides): docs/security.md.

ARG PYTHON_VERSION=3.11

# Build stage: the project installed into a virtual environment, runtime dependencies only.
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY docker/install.sh ./docker/install.sh
RUN sh docker/install.sh /src /opt/replog

# Run stage: that environment alone, without the sources, the build tools or pip's cache.
FROM python:${PYTHON_VERSION}-slim
COPY --from=build /opt/replog /opt/replog
COPY docker/healthcheck.py /opt/replog/healthcheck.py
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/replog --create-home --shell /usr/sbin/nologin replog \
    && mkdir /data \
    && chown replog:replog /data
ENV PATH=/opt/replog/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REPLOG_HOST=0.0.0.0 \
    REPLOG_PORT=8000 \
    REPLOG_DATA_DIR=/data \
    REPLOG_LOG_FORMAT=json
USER replog
WORKDIR /var/lib/replog
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["/opt/replog/bin/python", "/opt/replog/healthcheck.py"]
ENTRYPOINT ["replog"]
CMD ["--help"]
