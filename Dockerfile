# editq: one image for the API, the Celery worker, beat and the migrations.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the packages need is copied (there is no .dockerignore, so `COPY . .`
# would also bring in .venv and .git). README.m[d] is optional: the wildcard
# copies it when it exists and is skipped when it does not. The simulators'
# pyproject.toml is there only because uv reads the whole workspace; their code is
# not copied and not installed. The Python client (clients/python) is installed: editq
# depends on it (the CLI's API commands speak through it).
WORKDIR /tmp/editq-src
COPY pyproject.toml uv.lock README.m[d] ./
COPY simulators/pyproject.toml ./simulators/
COPY clients/python/pyproject.toml clients/python/README.md ./clients/python/
COPY clients/python/editq_client ./clients/python/editq_client
COPY api ./api
COPY cli ./cli
COPY shared ./shared
COPY worker ./worker
# The runtime dependencies at the versions of the committed lock, each checked against
# its hash (the same uv as the Makefile's UV_VERSION exports them), then the workspace's
# own packages, which the export leaves out (a path has no hash to check): the client and
# editq itself, without dependencies (the lock's are installed), then `pip check` that
# every requirement is met.
RUN pip install --no-cache-dir uv==0.13.9 \
    && uv export --frozen --no-dev --no-emit-workspace --no-header --format requirements.txt \
         -o /tmp/requirements.txt \
    && pip uninstall --yes uv \
    && pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt \
    && pip install --no-cache-dir --no-deps ./clients/python . \
    && pip check \
    && cd / && rm -rf /tmp/editq-src /tmp/requirements.txt \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin editq

# A writable working directory: celery beat keeps its schedule file in the cwd.
USER editq
WORKDIR /home/editq

EXPOSE 8000
CMD ["editq", "api", "--host", "0.0.0.0", "--port", "8000"]
