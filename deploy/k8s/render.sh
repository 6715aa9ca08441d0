#!/usr/bin/env bash
# Render a kustomization under deploy/k8s (default: the production overlay) to stdout.
# The proxy's ConfigMap is the repository's proxy/Caddyfile, outside the kustomization root:
# kustomize reads it only with the load restrictor off.
#   deploy/k8s/render.sh [overlays/production|base] | kubectl apply -f -
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec kubectl kustomize --load-restrictor LoadRestrictionsNone "$HERE/${1:-overlays/production}"
