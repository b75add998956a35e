# Production image: supervisord runs the collector and the Streamlit app as a non-root user.
# TimescaleDB and Redis are separate services (docker-compose.yml). The install steps are the same
# scripts `make run` uses.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PYTHON=/usr/local/bin/python3
WORKDIR /app

COPY requirements.txt requirements-dev.txt ./
COPY scripts/install-system-packages.sh scripts/install-python.sh scripts/
RUN scripts/install-system-packages.sh image && scripts/install-python.sh runtime \
    && rm -rf /var/lib/apt/lists/*

COPY . .
RUN .venv/bin/python scripts/build_native.py && rm -rf var/build \
    && .venv/bin/python -c "import common.events as e, common.live_scripts as l, collector.validation as v; assert e.NATIVE and v.NATIVE and l.NATIVE"
RUN useradd --create-home --uid 10001 liq && mkdir -p var/spool && chown -R liq:liq var

USER liq
ENV PYTHONPATH=/app LIQ_SPOOL_DIR=/app/var/spool LIQ_APP_PORT=8501
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"
STOPSIGNAL SIGTERM
CMD ["scripts/run.sh"]
