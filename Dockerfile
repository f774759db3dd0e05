# The controller's image: `docker build -t ari-realtime .` (docker-compose.yml
# builds it). Only the runtime dependencies; the tests are not in the image.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN pip install --no-cache-dir --disable-pip-version-check . \
 && rm -rf /src

# Settings come from the environment (docker-compose's env_file: .env).
# Run as an unprivileged user: the controller needs no privileges, only UDP
# ports in MEDIA_PORTS (above 1024) and outbound connections.
RUN useradd --system --no-create-home ari-realtime
USER ari-realtime
ENV PYTHONUNBUFFERED=1
CMD ["ari-realtime", "run"]
