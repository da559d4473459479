#!/usr/bin/env bash
# Install what tests/integration/test_deployment.py and test_dashboards.py need, on a fresh
# Debian (bookworm) machine. Idempotent and quiet: prints nothing when everything is there.
#
#   prometheus + promtool  Debian package `prometheus` (no service is started: policy-rc.d)
#   kustomize              `kubectl kustomize` (kustomize v4+) if kubectl is there, else a
#                          `kustomize` binary built from the Go module sigs.k8s.io/kustomize/kustomize/v5
#   check-jsonschema, kubernetes-validate, pyyaml
#                          into the project's virtualenv ($PYTHON, default .venv/bin/python)
#
# Usage: tools/install-deploy-tools.sh   (as root; the lead's Makefile calls it before tests)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.5.0}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { echo "install-deploy-tools: $*" >&2; }

# --- prometheus / promtool (Debian) ------------------------------------------------------
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # Never let the package start a Prometheus service on 0.0.0.0:9090 (policy-rc.d: 101 = deny).
    created_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    trap '[ -n "$created_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    if ! apt-cache show prometheus >/dev/null 2>&1; then
        $SUDO apt-get update -qq >/dev/null
    fi
    if ! $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>/tmp/install-deploy-tools.apt.log; then
        $SUDO apt-get update -qq >/dev/null
        $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>/tmp/install-deploy-tools.apt.log \
            || { cat /tmp/install-deploy-tools.apt.log >&2; exit 1; }
    fi
    command -v promtool >/dev/null 2>&1 || { log "promtool missing after installing prometheus"; exit 1; }
fi

# --- kustomize ----------------------------------------------------------------------------
kubectl_kustomize_ok() {
    # kubectl's embedded kustomize must be v4+ (Debian's kubernetes-client 1.20 embeds v2.0.3).
    command -v kubectl >/dev/null 2>&1 || return 1
    local v
    v="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')"
    [ -n "$v" ] && [ "$v" -ge 4 ]
}
if ! kubectl_kustomize_ok && ! command -v kustomize >/dev/null 2>&1; then
    GO="$(command -v go || true)"
    [ -z "$GO" ] && [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go
    if [ -z "$GO" ]; then
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq >/dev/null
        $SUDO apt-get install -y -qq --no-install-recommends golang-go >/dev/null
        GO="$(command -v go)"
    fi
    GOBIN=/usr/local/bin GOFLAGS=-mod=mod "$GO" install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}" \
        >/tmp/install-deploy-tools.go.log 2>&1 || { cat /tmp/install-deploy-tools.go.log >&2; exit 1; }
fi

# --- Python validators (in the project's virtualenv) ---------------------------------------
if [ -x "$PYTHON" ]; then
    if ! "$PYTHON" -c 'import check_jsonschema, kubernetes_validate, yaml' >/dev/null 2>&1; then
        "$PYTHON" -m pip install -q --disable-pip-version-check \
            "check-jsonschema>=0.29" "kubernetes-validate>=1.30" "pyyaml>=6" >/dev/null
    fi
else
    log "no virtualenv python at $PYTHON: install the project with '.[test]' first"
    exit 1
fi
