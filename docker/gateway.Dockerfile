# UCAI gateway: FastAPI app served by uvicorn on port 8000.
# Build from the repository root: docker build -f docker/gateway.Dockerfile .
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
# `data`: the `ucai data …` commands run in this container, next to the datasets volume.
RUN pip install ".[gateway,data]"

# The folders of its writable volumes belong to ucai: a new named volume copies the image folder's owner, and
# without these `ucai data import` (datasets) and the audit log could not write as this non-root user.
RUN useradd --create-home --uid 10001 ucai \
    && mkdir -p /datasets /audit /artifacts \
    && chown ucai:ucai /datasets /audit /artifacts
USER ucai

EXPOSE 8000
# The slim image has no curl: probe /health with the standard library.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8000/health', timeout=3)"]
CMD ["uvicorn", "gateway.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
