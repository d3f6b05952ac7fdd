"""The HTTP service: listeners, the prefix router, core endpoints, and protocol plug-ins."""
