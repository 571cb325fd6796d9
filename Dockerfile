# reaper: removes dead VOIP guests (see docs/containers.md).
#   docker build -t reaper:0.1.0 .
#   docker run --rm -e REDIS_HOST=redis -e REAPER_AUTH_SERVICE_BASE_URL=http://auth-service:3001 reaper:0.1.0
# Configure it with REAPER_<SECTION>_<KEY> variables (and the signaling service's REDIS_HOST,
# REDIS_PORT, REDIS_PASSWORD), or mount a TOML file and set REAPER_CONFIG.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin reaper

# The dependencies, pinned, in a layer of their own: rebuilt when requirements.lock changes, not
# at every change of reaper's code. `pip check` fails the build if the lock is incomplete.
COPY requirements.lock /src/requirements.lock
RUN pip install --no-deps -r /src/requirements.lock && pip check

# reaper itself, resolving nothing: what it needs is installed above (pip check says so).
COPY pyproject.toml README.md /src/
COPY reaper /src/reaper
RUN pip install --no-deps /src && pip check && rm -rf /src

# A numeric user, so Kubernetes' runAsNonRoot can verify it.
USER 10001

# /healthz, /readyz, /livez and /metrics on every interface of the container; JSON logs for collectors.
ENV REAPER_SERVER_LISTEN=0.0.0.0:9108 REAPER_LOG_FORMAT=json
EXPOSE 9108

# `reaper health` GETs /healthz on REAPER_SERVER_LISTEN: exit 0 on 200, 1 otherwise (no curl needed).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["reaper", "health"]

# SIGTERM finishes the batch in hand and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["reaper"]
CMD ["run"]
