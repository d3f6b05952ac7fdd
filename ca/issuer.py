"""An issuing CA: its certificate, chain, HSM key and the URLs put into what it issues."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from ca.keys.signer import SigningKey


@dataclass(frozen=True)
class IssuerUrls:
    """RFC 5280 §4.2.2.1 AIA (OCSP, caIssuers), §4.2.1.13 CDP and §4.2.1.15 Freshest CRL."""

    ocsp: str
    ca_issuers: str
    crl: str
    delta_crl: str

    @classmethod
    def for_issuer(cls, base_url: str, issuer_id: str, ocsp_base_url: str | None = None) -> IssuerUrls:
        base = base_url.rstrip("/")
        return cls(ocsp=f"{(ocsp_base_url or base).rstrip('/')}/ocsp", ca_issuers=f"{base}/ca/{issuer_id}.der",
                   crl=f"{base}/crl/{issuer_id}.crl",
                   delta_crl=f"{base}/crl/{issuer_id}-delta.crl")


@dataclass(frozen=True)
class Issuer:
    id: str
    certificate: x509.Certificate
    key: SigningKey
    chain: tuple[x509.Certificate, ...]  # certificates above this CA, excluding the root
    root: x509.Certificate
    urls: IssuerUrls

    @property
    def key_id(self) -> bytes:
        return self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest

    @property
    def name(self) -> x509.Name:
        return self.certificate.subject

    def chain_for_leaf(self) -> tuple[x509.Certificate, ...]:
        """What follows a leaf in a PEM chain: this CA and any intermediates, not the root."""
        return (self.certificate, *self.chain)
