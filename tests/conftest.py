# Constants and fixtures live in tests/fixtures.py (registered for the whole tree, components/
# and serving/ included, by the root conftest.py); re-exported here for `from tests.conftest import`.
from tests.fixtures import FLIGHTS_CONFIG, REPO, service_up  # noqa: F401
