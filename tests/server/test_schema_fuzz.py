"""A small schema fuzz (schemathesis) over the documented public routes: no input is a 500."""

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the schema fuzz needs the dev extra (schemathesis)")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402


def _app():
    from conftest import standin_pool

    return create_app(Settings(config="unused.json", max_voxels=200_000, max_upload_bytes=4 * 1024 * 1024),
                      standin_pool())


schema = schemathesis.openapi.from_asgi("/openapi.json", _app()).exclude(path_regex="^/admin|^/logs")


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
def test_no_documented_route_answers_500(case):
    case.call_and_validate(checks=[not_a_server_error])
