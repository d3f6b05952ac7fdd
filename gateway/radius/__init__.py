"""RADIUS for the gateway: a client (authentication relay, accounting) and a DAE listener."""
