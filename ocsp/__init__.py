"""ikepki revocation status: the OCSP responder (RFC 6960 / RFC 5019 / RFC 8954) and the CRL
publisher (RFC 5280 §5, full + delta + root CRLs), served by raw ASGI mounts on the plain HTTP
listener (ocsp/http.py), run by `ikepki serve` or alone by `ikepki ocsp serve`, with background
tasks in ocsp/worker.py. ocsp/push/ (revocation push to gateways) is a separate component."""
