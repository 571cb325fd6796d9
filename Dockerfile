# reaper: removes dead VOIP guests (see docs/containers.md).
#   docker build -t reaper .
#   docker run --rm -e REDIS_HOST=redis -e REAPER_AUTH_SERVICE_BASE_URL=http://auth-service:3001 reaper
# Configure it with REAPER_<SECTION>_<KEY> variables (and the signaling service's REDIS_HOST,
# REDIS_PORT, REDIS_PASSWORD), or mount a TOML file and set REAPER_CONFIG.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md /src/
COPY reaper /src/reaper
RUN pip install /src && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin reaper

# A numeric user, so Kubernetes' runAsNonRoot can verify it.
USER 10001

# /healthz, /readyz and /metrics on every interface of the container; JSON logs for collectors.
ENV REAPER_SERVER_LISTEN=0.0.0.0:9108 REAPER_LOG_FORMAT=json
EXPOSE 9108

# `reaper health` GETs /healthz on REAPER_SERVER_LISTEN: exit 0 on 200, 1 otherwise (no curl needed).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["reaper", "health"]

# SIGTERM finishes the batch in hand and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["reaper"]
CMD ["run"]
