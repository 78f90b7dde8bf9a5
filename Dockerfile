# editq: one image for the API, the Celery worker, beat and the migrations.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs is copied (there is no .dockerignore, so `COPY . .`
# would also bring in .venv and .git). README.m[d] is optional: the wildcard
# copies it when it exists and is skipped when it does not.
WORKDIR /tmp/editq-src
COPY pyproject.toml README.m[d] ./
COPY api ./api
COPY cli ./cli
COPY shared ./shared
COPY worker ./worker
RUN pip install --no-cache-dir . \
    && cd / && rm -rf /tmp/editq-src \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin editq

# A writable working directory: celery beat keeps its schedule file in the cwd.
USER editq
WORKDIR /home/editq

EXPOSE 8000
CMD ["editq", "api", "--host", "0.0.0.0", "--port", "8000"]
