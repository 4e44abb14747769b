# UCAI worker: consumes the Redis task stream and calls the model roles over HTTP.
# Build from the repository root: docker build -f docker/worker.Dockerfile .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ucai/ ucai/
COPY services/ services/
COPY gateway/ gateway/
COPY training/ training/
RUN pip install ".[worker]"

RUN useradd --create-home --uid 10001 ucai
USER ucai

# Exits 0 while this container's worker writes its heartbeat key (services/runtime/heartbeat.py), not only when
# Redis answers.
HEALTHCHECK --interval=15s --timeout=10s --start-period=20s --retries=5 \
    CMD ["python", "-m", "services.runtime.healthcheck"]
CMD ["python", "-m", "services.runtime.worker"]
