"""A real S3 API on 127.0.0.1 without a cloud: moto's standalone server (moto[s3] + flask, in the
pipeline lock) in its own process, on a free port. The pipeline interpreter runs it, so tests of
either environment can use it (the serving image does not carry moto).

    with S3Server() as s3:
        s3.create_bucket("mlpipeline")
        env = s3.env()          # AWS_ENDPOINT_URL, keys and region, as KFP gives every step
        uri = "s3://mlpipeline/mlops"

Clients find it the way a cluster's pods find MinIO: AWS_ENDPOINT_URL (botocore, s3fs, boto3 and
so Feast's S3 registry store) and the FileSource's s3_endpoint_override (pyarrow, dask).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from tests.support.fixtures import PIPELINE_PY
from tests.support.redis_server import free_port

ACCESS_KEY = "minio"  # moto accepts any keys; these are what KFP standalone's MinIO uses
SECRET_KEY = "minio123"
REGION = "us-east-1"


class S3Server:
    def __init__(self):
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = None  # the server logs every request: a file, never a pipe that would fill and block it

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What the pods get from configs/cluster-kfp.yaml and the mlops-object-store Secret."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def start(self, timeout: float = 30) -> S3Server:
        args = [str(PIPELINE_PY), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"moto server exited ({self.proc.returncode}): {self.log.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not answer on {self.endpoint} within {timeout:g} s")
            time.sleep(0.1)

    def create_bucket(self, name: str) -> None:
        # moto does not check signatures: a bare PUT creates the bucket, whichever environment asks.
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT", data=b"")
        with urllib.request.urlopen(request, timeout=5):
            pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
