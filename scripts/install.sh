#!/usr/bin/env bash
# Create .venv and install the pinned environment, plus the Debian packages the stack uses.
# Re-running is cheap: pip is skipped while requirements/constraints are unchanged.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# docker.io + debootstrap: the Docker Engine and the local base images of the Compose tests
# (scripts/docker_engine.sh, scripts/standin_images.sh).
APT_PACKAGES=(prometheus chromium curl caddy docker.io debootstrap)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$RUN/pip.stamp"
want="$(cat "$ROOT/requirements.txt" "$ROOT/constraints.txt" | sha256sum | cut -c1-16)"
if [[ ! -x "$PY" ]]; then
  say "creating .venv"
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  say "installing Python packages (a few minutes on a fresh machine)"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -r "$ROOT/requirements.txt" -c "$ROOT/constraints.txt"
  "$PY" -m pip check
  echo "$want" >"$stamp"
fi
# MediaPipe Hands models (palm detector + landmarks): pinned npm package, sha256-checked, idempotent.
"$PY" -m utils.hand_models fetch
say "environment ready"
