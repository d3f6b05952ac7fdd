# syntax=docker/dockerfile:1.7
#
# ikepki container image: the `ikepki` console script with SoftHSM2 (demo token) and the
# TPM2 TSS runtime libraries (tpm2-pytss, TPM attestation).  Runs as uid/gid 10001 on a
# read-only root filesystem: state in /var/lib/ikepki (IKEPKI_DIR, a volume), /tmp an
# emptyDir.
#
#   docker build -t registry.example.internal/ikepki/ikepki:0.1.0 .
#   # or without a daemon: buildah bud -t … . / kaniko / `docker buildx build --platform linux/amd64,linux/arm64`

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# build: compile wheels for the project and every dependency (tpm2-pytss and vici have no
# manylinux wheels for every platform, so a compiler and the TSS headers are needed here).
FROM ${PYTHON_IMAGE} AS build
# PIP_CERT (optional): a CA bundle for PyPI behind a TLS-intercepting proxy, bind-mounted by
# container/build-image.sh; a build ARG, so it never reaches the runtime image.
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# python3-dev only where the base lacks Python's headers (a Debian base; the official python
# image has them): tpm2-pytss compiles against pyconfig.h.
RUN apt-get update \
 && headers=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])') \
 && dev=$(test -e "$headers/Python.h" || echo python3-dev) \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config libtss2-dev libffi-dev libssl-dev $dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --upgrade pip wheel setuptools
WORKDIR /src
# Dependency wheels first, from pyproject.toml alone: this layer stays cached while only the
# sources change.
COPY pyproject.toml ./
RUN /opt/build/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' >/tmp/requirements.txt \
 && /opt/build/bin/pip wheel --wheel-dir /wheels -r /tmp/requirements.txt
COPY README* LICENSE* ./
COPY ca ./ca
COPY enrollment ./enrollment
COPY ocsp ./ocsp
COPY gateway ./gateway
COPY response ./response
COPY console ./console
COPY hsm-config ./hsm-config
RUN /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------
# runtime: only the runtime libraries and the installed wheels, in a venv at /opt/ikepki.
FROM ${PYTHON_IMAGE} AS runtime
ARG IKEPKI_UID=10001
LABEL org.opencontainers.image.title="ikepki" \
      org.opencontainers.image.description="Internal PKI for IKEv2 identities: HSM-backed CA, ACME/EST/SCEP, OCSP/CRL, revocation push, IKEv2 responder" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/ikepki PATH=/opt/ikepki/bin:$PATH \
    IKEPKI_DIR=/var/lib/ikepki \
    IKEPKI_HSM_MODULE=/usr/lib/softhsm/libsofthsm2.so \
    TMPDIR=/tmp
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      softhsm2 ca-certificates \
      libtss2-esys-3.0.2-0 libtss2-fapi1 libtss2-mu0 libtss2-rc0 libtss2-sys1 libtss2-tctildr0 \
      libtss2-tcti-device0 libtss2-tcti-swtpm0 libtss2-tcti-mssim0 \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /usr/lib/softhsm/libsofthsm2.so /usr/lib/libsofthsm2.so \
 && test -e /usr/lib/softhsm/libsofthsm2.so
# buildah's layer cache does not look into a bind-mounted stage: container/build-image.sh passes
# the content key of the sources so that a changed wheel is reinstalled.
ARG IKEPKI_SOURCE_KEY=unset
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    echo "ikepki sources ${IKEPKI_SOURCE_KEY}" \
 && python -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --no-index --find-links=/wheels ikepki \
 && "$VIRTUAL_ENV/bin/pip" uninstall -y -q pip setuptools \
 && find "$VIRTUAL_ENV/lib" -depth -type d -path '*/site-packages/*' \( -name tests -o -name testdata \) \
      -exec rm -rf {} +
# ^ no installer left in the image, and no third-party test data (acme ships test private keys).
# ca/ceremony.py looks for the default key ceremony at <site-packages>/../hsm-config
# relative to the `ca` package (hsm-config/ is not package data yet).
COPY --from=build /src/hsm-config/ceremony.yaml /opt/ikepki/lib/python3.11/site-packages/hsm-config/ceremony.yaml
RUN "$VIRTUAL_ENV/bin/python" -m compileall -q "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/ikepki" --help >/dev/null
# Non-root user; every path ikepki writes is a volume in Kubernetes (state, /tmp), so the
# root filesystem can be mounted read-only.  SoftHSM's default token dir is made writable
# for `docker run` use without a chart.
RUN groupadd --system --gid "${IKEPKI_UID}" ikepki \
 && useradd --system --uid "${IKEPKI_UID}" --gid ikepki --home-dir /var/lib/ikepki --shell /usr/sbin/nologin ikepki \
 && install -d -o ikepki -g ikepki -m 0750 /var/lib/ikepki /etc/ikepki \
 && install -d -o ikepki -g ikepki -m 0750 /var/lib/softhsm/tokens
USER 10001:10001
WORKDIR /var/lib/ikepki
VOLUME ["/var/lib/ikepki"]
EXPOSE 8443 8080
# Kubernetes sets command: ["ikepki"] and the per-component args (charts/ikepki).
ENTRYPOINT ["ikepki"]
CMD ["serve", "--dir", "/var/lib/ikepki", "--host", "0.0.0.0", "--https-port", "8443", "--http-port", "8080"]
