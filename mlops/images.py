"""Container images of the two environments, pinned in one place (KFP components, manifests).

Override at compile time for a registry of your own (e.g. a kind cluster's local registry):
MLOPS_PIPELINE_IMAGE / MLOPS_SERVING_IMAGE.
"""

import os

VERSION = "0.1.0"
PIPELINE_IMAGE = os.environ.get("MLOPS_PIPELINE_IMAGE", f"ghcr.io/mlops-platform/pipeline:{VERSION}")
SERVING_IMAGE = os.environ.get("MLOPS_SERVING_IMAGE", f"ghcr.io/mlops-platform/serving:{VERSION}")
