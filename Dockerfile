# syntax=docker/dockerfile:1
# Coalition gateway image: gRPC on 50051, web (PassKit web service, member card page) on 8080.

FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir .

FROM python:3.12-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A Unicode font for donation receipts as PDF (without one, names outside Latin-1 print as "?").
RUN apt-get update \
 && apt-get install --yes --no-install-recommends fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 coalition \
 && useradd --system --uid 10001 --gid coalition --home-dir /var/lib/coalition \
        --create-home --shell /usr/sbin/nologin coalition
COPY --from=build /opt/venv /opt/venv
# Without COALITION_DATABASE_URL the SQLite file lands in the working directory,
# which the non-root user owns.
WORKDIR /var/lib/coalition
USER 10001:10001
EXPOSE 50051 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD coalition health --target "127.0.0.1:${COALITION_GRPC_PORT:-50051}" || exit 1
CMD ["coalition", "serve", "--host", "0.0.0.0", "--log-format", "json"]
