# Machinery: the API (`machinery serve`), a worker (`machinery worker`) or an example service, one image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from setup.py alone: this layer stays cached until the dependencies change.
COPY setup.py ./
RUN mkdir machinery && touch machinery/__init__.py \
    && pip install . \
    && pip uninstall -y machinery \
    && rm -rf machinery build *.egg-info

# Then the code.
COPY machinery ./machinery
COPY examples ./examples
COPY gunicorn.conf.py ./
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin machinery

USER machinery
ENV MACHINERY_BIND=0.0.0.0:5000 \
    MACHINERY_LOG_FORMAT=json
EXPOSE 5000

# slim has no curl: ask with Python. /healthcheck is liveness (204 whatever the store); /readyz is readiness.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:5000/healthcheck', timeout=2).status < 400 else 1)"]

CMD ["machinery", "serve"]
