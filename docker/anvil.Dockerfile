# The Anvil node of docker/compose.yaml, from the repository's pinned npm lock (the same Anvil as
# the tests): installed at build time, so nothing is downloaded when the container starts.
FROM node:20.18.1-bookworm-slim
WORKDIR /anvil
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error && mkdir -p /data && chown node /data
USER node
EXPOSE 8545
CMD ["/anvil/node_modules/.bin/anvil", "--host", "0.0.0.0", "--chain-id", "31337", "--state", "/data/anvil-state.json"]
