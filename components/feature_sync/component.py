"""KFP interface of the feature sync step (implementation: executor.py). Serving image."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from mlops.images import SERVING_IMAGE


@dsl.component(base_image=SERVING_IMAGE, install_kfp_package=False)
def feature_sync(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    materialize: bool,
    sources: Output[Artifact],
):
    """Rebuilds the Feast sources from the dataset repository and applies the feature repo.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty.
        materialize: Also load the online store (serving freshness).
        sources: JSON: source name -> dataset version id, and the objects applied.
    """
    import json

    from components.feature_sync.executor import sync

    result = sync(config_path, config_overrides, artifact_root, materialize)
    with open(sources.path, "w") as f:
        json.dump(result, f, indent=2)
    sources.metadata.update(result["sources"])
