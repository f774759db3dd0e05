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
# Call records: the default SQLite file goes to $STATE_DIRECTORY/calls.db, a
# directory only that user can read (docker-compose.yml mounts a volume there).
RUN useradd --system --no-create-home ari-realtime \
 && install -d -o ari-realtime -g ari-realtime -m 700 /var/lib/ari-realtime
USER ari-realtime
ENV PYTHONUNBUFFERED=1 STATE_DIRECTORY=/var/lib/ari-realtime
CMD ["ari-realtime", "run"]
