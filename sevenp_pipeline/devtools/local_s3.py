"""An S3 emulator for trying the at-scale deployment on one machine: ``python -m sevenp_pipeline.devtools.local_s3``.

docker/compose.yaml's ``local-s3`` profile runs it: moto's server (the emulator the tests use) on
``SEVENP_LOCAL_S3_HOST``:``SEVENP_LOCAL_S3_PORT`` (default 127.0.0.1:9000) with the bucket
``SEVENP_ARTIFACTS_BUCKET`` made, so the artifact store, the stage and dependency caches and the step
logs (S3ComputeLogManager) have somewhere to go without an AWS account. Its objects live in memory:
they are gone when it stops. A team points ``SEVENP_S3_ENDPOINT_URL`` at its real S3 instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import boto3

BUCKET_VARIABLE = "SEVENP_ARTIFACTS_BUCKET"


def main() -> int:
    bucket = os.environ.get(BUCKET_VARIABLE, "")
    if not bucket:
        print(f"local_s3: {BUCKET_VARIABLE} is not set (the bucket to make)", file=sys.stderr)
        return 2
    host = os.environ.get("SEVENP_LOCAL_S3_HOST", "127.0.0.1")
    port = int(os.environ.get("SEVENP_LOCAL_S3_PORT", "9000"))
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 (moto: the local-s3 extra only)

    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}",
                          region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    client.create_bucket(Bucket=bucket)
    print(f"local_s3: serving bucket {bucket} at http://{host}:{port} (in memory)", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
