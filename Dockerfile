# syntax=docker/dockerfile:1
# The gateway image: compiled in a build stage with the dev dependencies, run with production
# dependencies only, as a non-root user. No configuration or secret is baked in: mount the YAML at
# /etc/gateway/gateway.yaml and pass secrets as environment variables it references as ${NAME}.
#   docker build -t api-gateway .
#   docker run -p 8080:8080 -v $PWD/gateway.yaml:/etc/gateway/gateway.yaml:ro -e JWT_SECRET api-gateway

FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# lua/ holds the Redis scripts the store loads at run time; created empty when there are none yet.
RUN npm run build && mkdir -p lua

FROM node:22-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/lua ./lua
# The node image's unprivileged user, by number so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080 9901
# The same command the bench starts, with the Node flags of src/lifecycle/node-flags.ts (a larger
# young generation: see there).
CMD ["node", "--max-semi-space-size=64", "dist/src/main.js", "--config", "/etc/gateway/gateway.yaml"]
