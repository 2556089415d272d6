#!/usr/bin/env bash
# Creates the demo's secrets (never committed): a random session secret and an ES256 JWT key
# shared by both wxgate replicas. Run once; existing files are kept.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p -m 0700 secrets
[ -s secrets/session_secret ] || openssl rand -base64 32 > secrets/session_secret
[ -s secrets/jwt.pem ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out secrets/jwt.pem
# The directory stays private (0700). The files are bind-mounted into the containers with
# their host mode, and the containers run as uid 65532, so they must be world-readable.
chmod 0644 secrets/session_secret secrets/jwt.pem
echo "wrote $(pwd)/secrets/session_secret and $(pwd)/secrets/jwt.pem"
