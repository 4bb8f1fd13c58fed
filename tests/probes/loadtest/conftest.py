"""The gateway tests' simulator and gateway servers, for the load tests that drive them."""

from tests.routing.gateway_fixtures import serve_gateway, sim  # noqa: F401
