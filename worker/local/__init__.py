"""Local stand-ins for AWS services, for development, demos and integration tests."""
