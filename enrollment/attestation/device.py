"""Device-side TPM library (tpm2-pytss ESAPI): EK certificate, AK, credential activation, device key,
CSR signed inside the TPM, certification of the device key and the device-attest-01 ``attObj``.

TPM 2.0 Library Part 3: §12.6 ActivateCredential, §18.2 Certify, §28.5 EvictControl, §23.4
PolicySecret / §23.6 PolicyOR; TCG EK Credential Profile §2.2.1 (EK NV indices and handles,
EK authorization policies A and C); draft-ietf-acme-device-attest-09 §5 (extraData from the key
authorization, see :func:`enrollment.attestation.tpm_statement.expected_extra_data`).

There is no resource manager in front of swtpm, so every transient object and session created
here is flushed before the call returns; persistent objects (SRK, AK, device key) stay.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_SE, TPMA_OBJECT
from tpm2_pytss.cryptography import tpm_ecc_private_key
from tpm2_pytss.TSS2_Exception import TSS2_Exception
from tpm2_pytss.types import (
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPML_DIGEST,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF,
)
from tpm2_pytss.utils import NVReadEK

from ca.device_identity import HardwareModuleName, PermanentIdentifier
from enrollment.attestation.tpm_statement import expected_extra_data

EkKind = Literal["rsa", "ecc"]
EK_HANDLES: dict[str, tuple[int, int]] = {  # (persistent EK handle, EK certificate NV index)
    "rsa": (0x81010001, 0x01C00002),  # RSA-2048, low range (L-1)
    "ecc": (0x81010016, 0x01C00016),  # NIST P-384, high range (H-3), as provisioned by swtpm
}
DEFAULT_SRK_HANDLE = 0x81000001
DEFAULT_AK_HANDLE = 0x81000002
DEFAULT_DEVICE_KEY_HANDLE = 0x81000003
# EK policy C for SHA-384 (EK profile §2.1.5.3: PolicyNV on the EK policy index), OR-ed with policy A.
_EK_POLICY_C = {
    TPM2_ALG.SHA384: bytes.fromhex(
        "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165"
    ),
}
_SRK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.DECRYPT
    | TPMA_OBJECT.NODA
)
AK_TEMPLATE_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)
DEVICE_KEY_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.SIGN_ENCRYPT
)
_COSE_BY_HASH = {TPM2_ALG.SHA256: -7, TPM2_ALG.SHA384: -35, TPM2_ALG.SHA512: -36}
_COSE_RSA_BY_HASH = {TPM2_ALG.SHA256: -257, TPM2_ALG.SHA384: -258, TPM2_ALG.SHA512: -259}


@dataclass(frozen=True)
class Certification:
    """Output of TPM2_Certify in WebAuthn ``tpm`` statement form."""

    alg: int  # COSE algorithm of the AK signature
    cert_info: bytes  # TPMS_ATTEST
    sig: bytes  # DER ECDSA / raw RSASSA
    pub_area: bytes  # TPMT_PUBLIC of the certified key


def build_att_obj(certification: Certification, ak_chain: Sequence[bytes]) -> bytes:
    """The attestation object (WebAuthn L2 §6.5.4, fmt "tpm" §8.3), ``authData`` omitted (draft-09 §5)."""
    statement = {
        "ver": "2.0",
        "alg": certification.alg,
        "x5c": list(ak_chain),
        "sig": certification.sig,
        "certInfo": certification.cert_info,
        "pubArea": certification.pub_area,
    }
    return cbor2.dumps({"fmt": "tpm", "attStmt": statement}, canonical=True)


class TpmDevice:
    """One ESAPI connection to the device TPM (``tcti`` e.g. ``swtpm:host=127.0.0.1,port=2321``)."""

    def __init__(
        self,
        tcti: str,
        ek_kind: EkKind = "rsa",
        *,
        srk_handle: int = DEFAULT_SRK_HANDLE,
        ak_handle: int = DEFAULT_AK_HANDLE,
    ) -> None:
        self._ectx = ESAPI(tcti)
        self._ek_handle, self._ek_nv_index = EK_HANDLES[ek_kind]
        self._srk_handle = srk_handle
        self._ak_handle = ak_handle

    def __enter__(self) -> TpmDevice:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Finalize the ESAPI context and the TCTI."""
        self._ectx.close()

    # -- EK -------------------------------------------------------------------------------------
    def ek_certificate(self) -> bytes:
        """EK certificate DER from its NV index (EK profile §2.2.1.4)."""
        return NVReadEK(self._ectx)(self._ek_nv_index)

    def _ek(self) -> ESYS_TR:
        return self._ectx.tr_from_tpmpublic(self._ek_handle)

    @contextmanager
    def _ek_auth(self, ek: ESYS_TR) -> Iterator[ESYS_TR]:
        """Authorization for using the EK as parent / decryption key.

        High-range EKs set userWithAuth (empty password works); low-range ones need policy A =
        PolicySecret(TPM_RH_ENDORSEMENT), OR-ed with policy C when the template uses it (H-3 variant).
        """
        public, _, _ = self._ectx.read_public(ek)
        area = public.publicArea
        if int(area.objectAttributes) & int(TPMA_OBJECT.USERWITHAUTH):
            yield ESYS_TR.PASSWORD
            return
        session = self._ectx.start_auth_session(
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), area.nameAlg
        )
        try:
            self._ectx.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
            digest = bytes(self._ectx.policy_get_digest(session))
            if digest != bytes(area.authPolicy) and area.nameAlg in _EK_POLICY_C:
                self._ectx.policy_or(session, TPML_DIGEST([digest, _EK_POLICY_C[area.nameAlg]]))
            yield session
        finally:
            self._flush_session(session)

    def _flush_session(self, session: ESYS_TR) -> None:
        with suppress(TSS2_Exception):  # gone already if the command ran without continueSession
            self._ectx.flush_context(session)

    # -- AK -------------------------------------------------------------------------------------
    def _persistent(self, handle: int) -> ESYS_TR | None:
        """The persistent object at ``handle``, or None (asks GetCapability first: no ESYS error log)."""
        _, data = self._ectx.get_capability(TPM2_CAP.HANDLES, handle, 1)
        if handle not in list(data.data.handles):
            return None
        return self._ectx.tr_from_tpmpublic(handle)

    def ak_public(self, *, recreate: bool = False) -> bytes:
        """Marshalled TPMT_PUBLIC of the AK, creating and persisting it under the EK if needed."""
        existing = self._persistent(self._ak_handle)
        if existing is not None and recreate:
            self._ectx.evict_control(ESYS_TR.OWNER, existing, self._ak_handle)
            existing = None
        if existing is None:
            existing = self._create_ak()
        public, _, _ = self._ectx.read_public(existing)
        return bytes(public.publicArea.marshal())

    def _create_ak(self) -> ESYS_TR:
        template = TPM2B_PUBLIC(TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", objectAttributes=AK_TEMPLATE_ATTRIBUTES))
        ek = self._ek()
        with self._ek_auth(ek) as auth:
            private, public, _, _, _ = self._ectx.create(ek, TPM2B_SENSITIVE_CREATE(), template, session1=auth)
        with self._ek_auth(ek) as auth:
            transient = self._ectx.load(ek, private, public, session1=auth)
        try:
            return self._ectx.evict_control(ESYS_TR.OWNER, transient, self._ak_handle)
        finally:
            self._ectx.flush_context(transient)

    def activate_credential(self, id_object: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential with the persisted AK and the EK; returns the secret."""
        blob, _ = TPM2B_ID_OBJECT.unmarshal(id_object)
        secret, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
        ak = self._ectx.tr_from_tpmpublic(self._ak_handle)
        ek = self._ek()
        with self._ek_auth(ek) as auth:
            out = self._ectx.activate_credential(ak, ek, blob, secret, session1=ESYS_TR.PASSWORD, session2=auth)
        return bytes(out)

    # -- device key -----------------------------------------------------------------------------
    def _srk(self) -> ESYS_TR:
        existing = self._persistent(self._srk_handle)
        if existing is not None:
            return existing
        template = TPM2B_PUBLIC(TPMT_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=_SRK_ATTRIBUTES))
        transient, _, _, _, _ = self._ectx.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER)
        try:
            return self._ectx.evict_control(ESYS_TR.OWNER, transient, self._srk_handle)
        finally:
            self._ectx.flush_context(transient)

    def create_device_key(self, handle: int = DEFAULT_DEVICE_KEY_HANDLE) -> bytes:
        """Create a non-exportable P-256 ECDSA key under the SRK, persist it at ``handle`` (replacing
        any key there) and return its marshalled TPMT_PUBLIC."""
        old = self._persistent(handle)
        if old is not None:
            self._ectx.evict_control(ESYS_TR.OWNER, old, handle)
        srk = self._srk()
        template = TPM2B_PUBLIC(TPMT_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=DEVICE_KEY_ATTRIBUTES))
        private, public, _, _, _ = self._ectx.create(srk, TPM2B_SENSITIVE_CREATE(), template)
        transient = self._ectx.load(srk, private, public)
        try:
            self._ectx.evict_control(ESYS_TR.OWNER, transient, handle)
        finally:
            self._ectx.flush_context(transient)
        return bytes(public.publicArea.marshal())

    def device_private_key(self, handle: int = DEFAULT_DEVICE_KEY_HANDLE) -> tpm_ecc_private_key:
        """A cryptography ``EllipticCurvePrivateKey`` whose ``sign`` runs in the TPM."""
        return tpm_ecc_private_key(self._ectx, self._ectx.tr_from_tpmpublic(handle))

    def build_csr(
        self,
        identifiers: Sequence[PermanentIdentifier | HardwareModuleName] = (),
        subject: x509.Name | None = None,
        handle: int = DEFAULT_DEVICE_KEY_HANDLE,
    ) -> x509.CertificateSigningRequest:
        """PKCS#10 request signed by the TPM device key; identifiers go into the SAN (draft-09 §3.2, §4.2)."""
        builder = x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
        if identifiers:
            names = [identifier.to_other_name() for identifier in identifiers]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=subject is None)
        return builder.sign(self.device_private_key(handle), hashes.SHA256())

    def certify(self, key_authorization: str, handle: int = DEFAULT_DEVICE_KEY_HANDLE) -> Certification:
        """TPM2_Certify of the device key by the AK with extraData = H(key authorization)."""
        ak = self._ectx.tr_from_tpmpublic(self._ak_handle)
        key = self._ectx.tr_from_tpmpublic(handle)
        ak_public, _, _ = self._ectx.read_public(ak)
        alg = _cose_alg(ak_public.publicArea)
        extra = expected_extra_data(key_authorization, alg)
        attest, signature = self._ectx.certify(
            key,
            ak,
            extra,
            TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
            session1=ESYS_TR.PASSWORD,
            session2=ESYS_TR.PASSWORD,
        )
        key_public, _, _ = self._ectx.read_public(key)
        return Certification(
            alg=alg,
            cert_info=bytes(attest.attestationData),
            sig=_signature_bytes(signature),
            pub_area=bytes(key_public.publicArea.marshal()),
        )

    def quote(self, selection: str, qualifying_data: bytes) -> tuple[bytes, bytes, dict[str, dict[int, bytes]]]:
        """TPM2_Quote (Part 3 §18.4) by the AK over ``selection`` (e.g. ``sha256:0,1,2,3,4,5,6,7``):
        (TPMS_ATTEST, marshalled TPMT_SIGNATURE, PCR values read just before)."""
        ak = self._ectx.tr_from_tpmpublic(self._ak_handle)
        pcrs = self.pcr_values(selection)
        attest, signature = self._ectx.quote(ak, selection, qualifying_data, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
                                             session1=ESYS_TR.PASSWORD)
        return bytes(attest.attestationData), bytes(signature.marshal()), pcrs

    def pcr_values(self, selection: str) -> dict[str, dict[int, bytes]]:
        """TPM2_PCR_Read (Part 3 §22.4) of every PCR in ``selection``; the TPM returns at most 8 per call."""
        out: dict[str, dict[int, bytes]] = {}
        for part in selection.split("+"):
            bank, _, indices = part.partition(":")
            wanted = [int(i) for i in indices.split(",")]
            values: dict[int, bytes] = {}
            while len(values) < len(wanted):
                rest = [i for i in wanted if i not in values]
                _, read, digests = self._ectx.pcr_read(f"{bank}:{','.join(map(str, rest))}")
                got = [b * 8 + k for b, byte in enumerate(bytes(read.pcrSelections[0].pcrSelect)
                                                           [:read.pcrSelections[0].sizeofSelect])
                       for k in range(8) if byte >> k & 1] if read.count else []
                if not got:
                    raise RuntimeError(f"the TPM returned no {bank} PCR values")
                for index, digest in zip(got, list(digests), strict=False):
                    values[index] = bytes(digest)
            out[bank] = values
        return out

    def att_obj(
        self, key_authorization: str, ak_chain: Sequence[bytes], handle: int = DEFAULT_DEVICE_KEY_HANDLE
    ) -> bytes:
        """Certify the device key and wrap the statement into a device-attest-01 attObj (CBOR)."""
        return build_att_obj(self.certify(key_authorization, handle), ak_chain)


def _cose_alg(ak: TPMT_PUBLIC) -> int:
    if ak.type == TPM2_ALG.ECC:
        return _COSE_BY_HASH[ak.parameters.eccDetail.scheme.details.anySig.hashAlg]
    return _COSE_RSA_BY_HASH[ak.parameters.rsaDetail.scheme.details.anySig.hashAlg]


def _signature_bytes(signature: TPMT_SIGNATURE) -> bytes:
    if signature.sigAlg == TPM2_ALG.ECDSA:
        ecdsa = signature.signature.ecdsa
        return encode_dss_signature(
            int.from_bytes(bytes(ecdsa.signatureR), "big"), int.from_bytes(bytes(ecdsa.signatureS), "big")
        )
    return bytes(signature.signature.rsassa.sig)
