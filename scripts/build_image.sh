#!/usr/bin/env bash
# Build the CPU image with no container registry, then run it and answer one chat request.
#
#   scripts/build_image.sh            # build + run + check   (as root; logs under $WORK)
#   scripts/build_image.sh run        # only run + check an image built before
#
# Steps (each timed in $WORK/build.log):
#   1. debootstrap --variant=minbase bookworm  -> a base root filesystem
#   2. podman import                           -> localhost/cat-serve-base:bookworm
#   3. podman build --isolation=chroot         -> localhost/cat-serve:cpu, BASE_IMAGE = that base; pip's
#      find-links / extra-index-url / constraint from `pip config list` are handed in as build args and
#      the directories they name are mounted read-only into the build
#   4. podman create + podman export           -> the image's own filesystem, unpacked
#      (`podman run` fails in sandboxes where crun cannot setrlimit; this path does not need crun)
#   5. chroot --userspec=<the image's USER> with /proc, /dev, /sys mounted, the image's ENV and
#      ENTRYPOINT (+ --host 127.0.0.1 --port $PORT --kv-cache-gib 1): the server, on loopback only
#   6. the image's HEALTHCHECK command, then a chat completion through the `openai` SDK
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/var/tmp/cat-serve-image}
IMAGE=${IMAGE:-localhost/cat-serve:cpu}
BASE=${BASE:-localhost/cat-serve-base:bookworm}
PORT=${PORT:-8017}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-1800}  # a first start compiles the model: minutes on a busy 2-core machine
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PY=${PY:-$HERE/.venv/bin/python}  # host python with the openai SDK
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
mkdir -p "$WORK"
LOG=$WORK/build.log
T0=$(date +%s)
step() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }

need() { command -v "$1" >/dev/null || { step "installing $2"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >>"$LOG" 2>&1; }; }

build() {
    need podman podman; need buildah buildah; need debootstrap debootstrap
    if ! podman image exists "$BASE"; then
        if [ ! -x "$WORK/base/usr/bin/python3" ]; then
            step "debootstrap --variant=minbase bookworm"
            rm -rf "$WORK/base"
            debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
                bookworm "$WORK/base" "$MIRROR" >>"$LOG" 2>&1
        fi
        step "podman import -> $BASE"
        tar -C "$WORK/base" -c . | podman import - "$BASE" >>"$LOG" 2>&1
    fi
    # pip's configuration on this machine (`pip config list`), handed to the build
    local args=() vols=() key val
    while IFS='=' read -r key val; do
        val=${val#\'}; val=${val%\'}
        case "$key" in
            find-links) args+=(--build-arg "PIP_FIND_LINKS=$val") ;;
            extra-index-url) args+=(--build-arg "PIP_EXTRA_INDEX_URL=$val") ;;
            constraint) args+=(--build-arg "PIP_CONSTRAINT=$val") ;;
            cert)  # the CA bundle this machine's HTTPS (proxy) needs, at a path of its own
                [ -f "$val" ] && args+=(--build-arg "PIP_CERT=/etc/pip-host-ca.crt") \
                    && vols+=(-v "$val:/etc/pip-host-ca.crt:ro"); continue ;;
            *) continue ;;
        esac
        for p in $val; do  # mount what the settings name (a file: its directory), read-only
            p=${p#file://}
            case "$p" in */simple|*/simple/) p=$(dirname "$p") ;; esac  # an index links to ../../files
            if [ -d "$p" ]; then vols+=(-v "$p:$p:ro"); elif [ -f "$p" ]; then vols+=(-v "$(dirname "$p"):$(dirname "$p"):ro"); fi
        done
    done < <("$PY" -m pip config list 2>/dev/null | sed -E 's/^[^.]*\.//' | sort -u)  # global.x / :env:.x: once
    step "podman build --isolation=chroot ${args[*]} ${vols[*]}"
    # --format docker: OCI image configs have no HEALTHCHECK
    podman build --isolation=chroot --format docker --network=host -t "$IMAGE" --build-arg "BASE_IMAGE=$BASE" \
        "${args[@]}" "${vols[@]}" -f "$HERE/Dockerfile" "$HERE" >>"$LOG" 2>&1
    step "built $IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"
}

ROOT=$WORK/rootfs
cleanup() {
    for m in dev/shm dev sys proc; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"; done
    return 0
}

check_image() {  # run by cat_serve.process once the image's server is healthy ($CAT_SERVE_PID: that process)
    set -euo pipefail
    step "healthy; server process owner: $(ps -o user= -p "$(pgrep -P "$CAT_SERVE_PID" | head -1 || echo "$CAT_SERVE_PID")" 2>/dev/null)"
    local hc; hc=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" 2>/dev/null || echo none)
    step "HEALTHCHECK $hc"
    local probe="import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=5)"  # HEALTHCHECK's
    env -i "${envs[@]}" chroot --userspec="$uid:$gid" "$ROOT" python -c "$probe" && step "healthcheck command: ok"
    "$PY" - "$CAT_SERVE_BASE_URL" <<'EOF' 2>&1 | tee -a "$LOG"
import sys
from openai import OpenAI
c = OpenAI(base_url=sys.argv[1], api_key="none")
m = c.models.list().data[0].id
r = c.chat.completions.create(model=m, messages=[{"role": "user", "content": "What is 7*6?"}],
                              max_tokens=24, temperature=0)
print("openai SDK ->", m, "| finish_reason:", r.choices[0].finish_reason, "| content:", repr(r.choices[0].message.content))
EOF
}

run() {
    step "podman create + export $IMAGE -> $ROOT"
    cleanup
    rm -rf "$ROOT"; mkdir -p "$ROOT"
    local cid; cid=$(podman create "$IMAGE")
    podman export "$cid" | tar -C "$ROOT" -x
    podman rm "$cid" >/dev/null
    local user entry env_json
    user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
    entry=$(podman image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")
    env_json=$(podman image inspect --format '{{json .Config.Env}}' "$IMAGE")
    local uid gid
    uid=$(awk -F: -v u="$user" '$1==u {print $3}' "$ROOT/etc/passwd")
    gid=$(awk -F: -v u="$user" '$1==u {print $4}' "$ROOT/etc/passwd")
    [ -n "$uid" ] && [ "$uid" != 0 ] || { step "FAIL: image user '$user' missing or root"; exit 1; }
    step "image user $user ($uid:$gid), entrypoint $entry"
    mount -t proc proc "$ROOT/proc"
    mount --bind /dev "$ROOT/dev"; mount -t tmpfs -o size=2g shm "$ROOT/dev/shm"
    mount --rbind /sys "$ROOT/sys"
    trap cleanup EXIT
    mapfile -t envs < <("$PY" -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$env_json")
    mapfile -t cmd < <("$PY" -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$entry")
    step "start: chroot --userspec=$uid:$gid $ROOT ${cmd[*]} --host 127.0.0.1 --port $PORT --kv-cache-gib 1"
    # cat_serve.process starts it in a process group of its own, waits until it is healthy, runs check_image
    # against it and stops the group (its log: $WORK/server.log)
    "$PY" -m cat_serve.process --log "$WORK/server.log" --port "$PORT" --timeout "$HEALTH_TIMEOUT" \
        --run "$(declare -p envs uid gid ROOT PORT PY LOG IMAGE T0); $(declare -f step check_image); check_image" -- \
        env -i "${envs[@]}" chroot --userspec="$uid:$gid" "$ROOT" \
        "${cmd[@]}" --host 127.0.0.1 --port "$PORT" --kv-cache-gib 1 2> >(tee -a "$LOG" >&2) \
        || { step "FAIL: the image's server did not start or did not answer (log: $WORK/server.log)"; exit 1; }
    step "image run OK (total wall time $(( $(date +%s) - T0 ))s)"
}

case "${1:-all}" in
    build) build ;;
    run) run ;;
    all) build; run ;;
    *) echo "usage: $0 [all|build|run]" >&2; exit 2 ;;
esac
