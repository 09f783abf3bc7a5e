"""Sample services the shim has never seen, each with two independent sides, for end-to-end tests."""
