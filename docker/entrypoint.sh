#!/bin/sh
# Two ways to start, one image (docs/hub.md):
#
# * Standalone: serve JupyterLab on all interfaces inside the container (publish it on the host's
#   loopback: docker run -p 127.0.0.1:8888:8888). The token is never empty: an unset
#   JUPYTER_TOKEN gets a random one, printed below so the learner can open the link, and an empty
#   token given any other way (JUPYTER_TOKEN="", --IdentityProvider.token=, --ServerApp.token "")
#   is refused, because Jupyter reads an empty token as "turn authentication off".
# * Started by JupyterHub (KubeSpawner, DockerSpawner): the hub sets JUPYTERHUB_API_TOKEN, and
#   its single-user server, jupyterhub-singleuser, logs users in through the hub instead of a
#   token. A hub may pass the command as the first argument (Zero to JupyterHub's default
#   singleuser.cmd is jupyterhub-singleuser); it is dropped, never run as given, so no argument
#   can start another program. JUPYTERHUB_API_TOKEN set but blank is refused.
set -eu

refuse() {
    echo "entrypoint: $1 is empty; Jupyter would serve without authentication. Give a real token or none (a random one is made)." >&2
    exit 2
}

LABS=/home/lab/ai-eng-lab/labs

if [ -n "${JUPYTERHUB_API_TOKEN+set}" ]; then
    if [ -z "$(printf %s "$JUPYTERHUB_API_TOKEN" | tr -d '[:space:]')" ]; then
        echo "entrypoint: JUPYTERHUB_API_TOKEN is set but empty; a hub always gives one. Unset it to serve standalone." >&2
        exit 2
    fi
    case "${1:-}" in
        jupyterhub-singleuser|*/jupyterhub-singleuser) shift ;;
    esac
    # The hub's notebook_dir (JUPYTERHUB_ROOT_DIR) wins; otherwise the labs, as standalone.
    if [ -z "${JUPYTERHUB_ROOT_DIR:-}" ]; then
        set -- --ServerApp.root_dir="$LABS" "$@"
    fi
    echo "JupyterHub single-user server for ${JUPYTERHUB_USER:-a hub user} (${JUPYTERHUB_SERVICE_PREFIX:-/})"
    exec jupyterhub-singleuser "$@"
fi

if [ -n "${JUPYTER_TOKEN+set}" ] && [ -z "$(printf %s "$JUPYTER_TOKEN" | tr -d '[:space:]')" ]; then
    if [ -n "$JUPYTER_TOKEN" ]; then refuse "JUPYTER_TOKEN"; fi
    unset JUPYTER_TOKEN  # set but empty, as `docker run -e JUPYTER_TOKEN=` does: make one
fi

# A token option among the extra arguments: as --X.token=value or as --X.token value.
expect_value=""
for arg in "$@"; do
    if [ -n "$expect_value" ]; then
        if [ -z "$(printf %s "$arg" | tr -d '[:space:]')" ]; then refuse "$expect_value"; fi
        JUPYTER_TOKEN=$arg
        expect_value=""
        continue
    fi
    case "$arg" in
        --*[Tt]oken=*)
            value=${arg#*=}
            if [ -z "$(printf %s "$value" | tr -d '[:space:]')" ]; then refuse "${arg%%=*}"; fi
            JUPYTER_TOKEN=$value ;;
        --*[Tt]oken) expect_value=$arg ;;
    esac
done
if [ -n "$expect_value" ]; then refuse "$expect_value"; fi

if [ -z "${JUPYTER_TOKEN:-}" ]; then
    JUPYTER_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(24))')
fi
export JUPYTER_TOKEN
echo "JupyterLab: http://127.0.0.1:8888/lab?token=${JUPYTER_TOKEN}"
# The token goes last, so it overrides one set in a config file as well.
exec jupyter lab --ServerApp.ip=0.0.0.0 --ServerApp.port=8888 --no-browser \
    --ServerApp.root_dir="$LABS" "$@" --IdentityProvider.token="$JUPYTER_TOKEN"
