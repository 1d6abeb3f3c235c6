#!/bin/sh
# Serve JupyterLab on all interfaces inside the container (publish it on the host's loopback:
# docker run -p 127.0.0.1:8888:8888). The token is never empty: an unset or empty JUPYTER_TOKEN
# gets a random one, printed below so the learner can open the link.
set -eu
if [ -z "${JUPYTER_TOKEN:-}" ]; then
    JUPYTER_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(24))')
fi
export JUPYTER_TOKEN
echo "JupyterLab: http://127.0.0.1:8888/lab?token=${JUPYTER_TOKEN}"
exec jupyter lab --ServerApp.ip=0.0.0.0 --ServerApp.port=8888 --no-browser \
    --ServerApp.root_dir=/home/lab/ai-eng-lab/labs "$@"
