"""One module per inbound format: parse the body (bounded) and check its authenticity."""
