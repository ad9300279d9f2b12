"""Stage family 'testing' (spec stage 2): unit, integration and API tests with real services."""
