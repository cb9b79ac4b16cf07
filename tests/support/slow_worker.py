"""The worker child of tests.support.slow_pipeline: sleeps the requested seconds."""

import sys
import time

from mlops.modeling.child import child_main

if __name__ == "__main__":
    child_main(sys.argv[1:], lambda request: time.sleep(request["seconds"]) or {"slept": request["seconds"]})
