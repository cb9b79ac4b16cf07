"""`python -m cli ...` = `mlops ...` (what mlops.envs re-executes in the other environment)."""

from cli.main import main

main()
