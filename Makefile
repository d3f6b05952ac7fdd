# ikepki — two commands on a fresh Debian 12 machine: `make run` and `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
DIR   ?= ./var

# Debian packages the service, the tests and the benchmarks need (installed only when missing).
APT_PACKAGES := softhsm2 opensc openssl curl iproute2 pkg-config gcc libtss2-dev libtss2-tcti-mssim0 \
  strongswan-charon strongswan-swanctl strongswan-pki libstrongswan-standard-plugins \
  libcharon-extra-plugins libstrongswan-extra-plugins \
  swtpm swtpm-tools tpm2-tools lego scep pebble golang-cfssl postgresql wrk apache2-utils \
  podman buildah runc catatonit mmdebstrap uidmap fuse-overlayfs \
  freeradius freeradius-utils eapoltest prometheus-alertmanager chromium chromium-driver nodejs

# the OpenID Provider of tests/oidc (npm oidc-provider, pinned by package-lock.json)
test-idp: tests/oidc/idp/node_modules/.installed

tests/oidc/idp/node_modules/.installed: tests/oidc/idp/package.json tests/oidc/idp/package-lock.json
	cd tests/oidc/idp && npm ci --no-audit --no-fund --silent
	@touch $@

.PHONY: setup system-packages container-config venv image run test lint typecheck bench clean test-idp

setup: system-packages container-config venv test-idp

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages (run as root or install them): $$missing" >&2; exit 1; fi; \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Podman on this kind of machine (charts/ikepki/README.md, "The container image"): runc (crun refuses the hybrid
# cgroup layout), cgroupfs, and default ulimits no higher than the current hard limits (raising
# RLIMIT_NOFILE/NPROC is not permitted; runc refused nproc above ~20000 here although the hard
# limit is higher, hence at most 4096).  One drop-in file; nothing else on the host is touched.
CONTAINERS_CONF := /etc/containers/containers.conf.d/50-ikepki.conf
container-config:
	@lim() { v=$$(ulimit -H $$1); [ "$$v" = unlimited ] || [ "$$v" -gt $$2 ] && v=$$2; echo $$v; }; \
	conf=$$(printf '# written by ikepki make setup\n[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' \
	  $$(lim -n 65536) $$(lim -n 65536) $$(lim -u 4096) $$(lim -u 4096)); \
	if [ "$$(cat $(CONTAINERS_CONF) 2>/dev/null)" != "$$conf" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "not root: cannot write $(CONTAINERS_CONF)" >&2; exit 1; fi; \
	  mkdir -p $(dir $(CONTAINERS_CONF)) && printf '%s\n' "$$conf" > $(CONTAINERS_CONF) && echo "wrote $(CONTAINERS_CONF)"; \
	fi

# The container image (podman, or docker where a daemon answers), cached by content:
# container/build-image.sh prints the image reference.  PYTHON_IMAGE=… picks the base.
image: system-packages container-config
	@container/build-image.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

run: setup
	@if [ ! -f $(DIR)/root-ca.pem ]; then $(VENV)/bin/ikepki init --dir $(DIR); fi
	$(VENV)/bin/ikepki serve --dir $(DIR)

test: setup
	$(VENV)/bin/ruff check ca enrollment ocsp gateway response console tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy ca enrollment ocsp gateway response console
	$(PY) -m pytest -q -p no:cacheprovider

lint:
	$(VENV)/bin/ruff check ca enrollment ocsp gateway response console tests bench
	$(VENV)/bin/lint-imports

typecheck:
	$(VENV)/bin/mypy ca enrollment ocsp gateway response console

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
