"""The worker child of tests.support.resource_pipeline: holds `allocate_mib` MiB of touched memory
and/or burns `burn_cpu_seconds` of CPU, so a step's measured peak RSS and CPU have known floors."""

import sys
import time

from mlops.modeling.child import child_main


def work(request: dict) -> dict:
    block = b"\x01" * (int(request.get("allocate_mib", 0)) << 20)  # written (memset): resident, not just mapped
    end = time.process_time() + float(request.get("burn_cpu_seconds", 0))
    spins = 0
    while time.process_time() < end:
        spins += 1
    return {"bytes": len(block), "spins": spins}


if __name__ == "__main__":
    child_main(sys.argv[1:], work)
