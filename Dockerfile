# syntax=docker/dockerfile:1
# The OMK Hive service image: one image for the web (gunicorn, the CMD) and the worker
# (`python manage.py worker`, set as the command by the worker's manifests).

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies in their own stage and layer: a code change does not reinstall them.
FROM base AS deps
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The hashed lock (`make lock`): every package pinned and checked against its hash, nothing
# resolved here, so two builds install the same files; `pip check` fails a lock missing one.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --require-hashes --no-deps -r /tmp/requirements.txt \
 && pip check

FROM base
# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 omk \
 && useradd --system --uid 10001 --gid omk --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin omk
COPY --from=deps /opt/venv /opt/venv
# Pidfiles, drain flags and gunicorn's metrics directory go under OMK_RUN_DIR (an emptyDir on
# GKE, where the root filesystem is read-only; in memory on Cloud Run).
RUN mkdir -p /tmp/omk && chown omk:omk /tmp/omk
WORKDIR /app
# The code stays owned by root: the service user can run it, not change it.
COPY . /app
# Bytecode for every module, written while the code is still root's: at run time nothing may
# write it (PYTHONDONTWRITEBYTECODE, and the service user cannot write /app), so without it every
# start of every instance compiled each of the service's modules from source again (about
# 100 ms of a cold start: docs/benchmarks.md#cold-start).
RUN python -m compileall -q /app
# Static files (the admin's CSS and scripts) collected into the image, served by whitenoise.
RUN SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost DJANGO_SETTINGS_MODULE=settings.production \
    /opt/venv/bin/python manage.py collectstatic --no-input
# Cloud Run sets PORT itself (8080 by default); Kubernetes uses this default. No
# PROMETHEUS_MULTIPROC_DIR here: gunicorn's config gives each master its own under OMK_RUN_DIR,
# and a process outside gunicorn (manage.py) keeps its metrics in memory.
ENV PATH=/opt/venv/bin:$PATH \
    DJANGO_SETTINGS_MODULE=settings.production \
    PORT=8080 \
    OMK_RUN_DIR=/tmp/omk
USER 10001:10001
EXPOSE 8080
# Exec form: gunicorn is PID 1 and gets the platform's SIGTERM itself (a shell form would put
# /bin/sh in between, which does not forward it, and the instance would be SIGKILLed undrained).
CMD ["gunicorn", "-c", "omk/gunicorn.conf.py"]
