# syntax=docker/dockerfile:1
# The gateway image: compiled in a build stage with the dev dependencies, run with production
# dependencies only, as a non-root user. No secret is baked in. An example configuration that
# listens on 0.0.0.0 (deploy/docker/gateway.yaml) makes `docker run` alone start something; mount
# your YAML over /etc/gateway/gateway.yaml and pass secrets as environment variables it references
# as ${NAME}.
#   docker build -t api-gateway --build-arg VERSION=$(node -p "require('./package.json').version") \
#     --build-arg REVISION=$(git rev-parse HEAD) --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
#   docker run -p 8080:8080 -v $PWD/gateway.yaml:/etc/gateway/gateway.yaml:ro -e JWT_SECRET api-gateway
#
# The base image is pinned by digest, so a rebuild gets the same bytes until someone decides
# otherwise (a tag moves with every Node patch and Debian security update). Both stages use the same
# digest. To update it (monthly, or on a Node or Debian security release):
#   docker buildx imagetools inspect node:22-bookworm-slim --format '{{json .Manifest.Digest}}'
# (or `docker pull node:22-bookworm-slim` and read the RepoDigests of `docker image inspect`),
# replace the digest in both FROM lines and in the base.digest label, rebuild, and run the tests.
# The digest is that of the multi-platform index, so amd64 and arm64 builds both resolve.

FROM node:22-bookworm-slim@sha256:f32b81066cde10a75dbac96646099533316d94bac4150c55da1636e1f0ffdc46 AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# lua/ holds the Redis scripts the store loads at run time; created empty when there are none yet.
RUN npm run build && mkdir -p lua

FROM node:22-bookworm-slim@sha256:f32b81066cde10a75dbac96646099533316d94bac4150c55da1636e1f0ffdc46 AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
# The repository URL, for registries that link an image to its source.
ARG SOURCE=""
# OCI image annotations (https://github.com/opencontainers/image-spec/blob/main/annotations.md).
LABEL org.opencontainers.image.title="api-gateway" \
      org.opencontainers.image.description="A fast API gateway: routing, auth, exact distributed rate limits, auth-aware caching, honest failure behaviour." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="docker.io/library/node:22-bookworm-slim" \
      org.opencontainers.image.base.digest="sha256:f32b81066cde10a75dbac96646099533316d94bac4150c55da1636e1f0ffdc46"
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/lua ./lua
COPY deploy/docker/gateway.yaml /etc/gateway/gateway.yaml
# The node image's unprivileged user, by number so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080 9901
# The same command the bench starts, with the Node flags of src/lifecycle/node-flags.ts (a larger
# young generation: see there).
CMD ["node", "--max-semi-space-size=64", "dist/src/main.js", "--config", "/etc/gateway/gateway.yaml"]
