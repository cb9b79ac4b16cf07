"""The peer of the serving benchmark: a plain FastAPI endpoint wrapping the same predictor.

    python -m bench.peer_fastapi --model-dir DIR --port P [--runtime savedmodel|tflite|auto]

What a team would write without a serving framework: FastAPI + uvicorn (uvloop, httptools, access
log off like our server), one sync route (FastAPI runs it in its thread pool) that takes the same
Open Inference Protocol v2 JSON body with every model input, calls `predictor.predict` and answers
v2 JSON. No feature store, payload log, metrics, request ids or input checking beyond what the
code needs to run: it is the floor a framework's extra work is measured against.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def create_app(model_dir: str, runtime: str = "savedmodel"):
    from fastapi import Body, FastAPI

    from serving.predictor import load_predictor

    predictor = load_predictor(model_dir, runtime)
    dtypes = {s.name: s.dtype for s in predictor.inputs}
    app = FastAPI()

    @app.get("/v2/health/ready")
    def ready():
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    def infer(name: str, body: dict = Body(...)):
        columns = {}
        for tensor in body["inputs"]:
            data = tensor["data"]
            if dtypes[tensor["name"]] == "float32":
                columns[tensor["name"]] = np.array([np.nan if v is None else v for v in data], dtype=np.float32)
            else:
                columns[tensor["name"]] = np.array(data, dtype=object)
        p = predictor.predict(columns)
        return {
            "model_name": name,
            "id": body.get("id", ""),
            "outputs": [{"name": "probability", "shape": [len(p)], "datatype": "FP32", "data": p.tolist()}],
        }

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument(
        "--runtime",
        default="savedmodel",
        choices=["savedmodel", "tflite", "auto"],
        help="serving.predictor runtime; the benchmark passes the server's",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import uvicorn

    uvicorn.run(
        create_app(args.model_dir, args.runtime), host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
