"""The lab's model service, as uvicorn serves it:

    make serve                  # PORT=8000 by default, on 127.0.0.1
    uvicorn app:app --app-dir labs/16_serving --host 127.0.0.1 --port 8000   # the same by hand

POST /api/v1/classify {"image_base64": "...", "top_k": 3} (or {"pixels": [[...]]}), GET /health,
GET /metrics. The models come from data/serving/models/<version>/; when none has been exported
yet, the default digits model is trained and exported first (a few seconds; needs torch). The
SERVING_* environment variables choose the versions and their weights: see
lablib.deploy.serving.app.from_env. Everything else lives in lablib.deploy.serving.
"""

from lablib.deploy.serving import from_env

app = from_env(train_if_empty=True)
