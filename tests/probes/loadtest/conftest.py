"""The gateway tests' simulator and gateway servers, for the load tests that drive them."""

