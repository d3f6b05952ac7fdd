"""TPM-bound device identity: protocol-agnostic verification core and device-side TPM library.

Server side (no TPM needed)
    ek.validate_ek_certificate(der, EkTrustStore, now) -> EkIdentity           TCG EK profile, chain
    credential.CredentialActivation(trust, repository, clock).start(ek_der, ak_public) -> CredentialBlob
    credential.CredentialActivation.finish(challenge_id, secret) -> ActivatedAk   MakeCredential round trip
    ak_cert.issue_ak_certificate(authority, activated, requester, validity) -> IssuedCertificate
        through Authority.issue_internal (profile attestation-ak: HSM attestation CA, lint, store, audit)
    tpm_statement.verify_tpm_attestation(att_obj, key_authorization=..., csr_public_key=...,
        attestation_roots=..., now=..., expected_identifier=...) -> AttestationResult
    tpm_statement.DeviceAttestationVerifier    single-use challenge + verification (replay-safe)
    acme_validator.DeviceAttest01Validator / acme_validators(deployment)   plug-in for enrollment.acme
    repository.ChallengeRepository (Protocol) / InMemoryChallengeRepository (tests only)

Device side (tpm2-pytss ESAPI)
    device.TpmDevice(tcti, "rsa" | "ecc"): ek_certificate, ak_public, activate_credential,
        create_device_key, build_csr, certify, att_obj
    acme_challenge.DeviceAttest01 / DeviceAttest01Response   acme-library challenge classes

Every verification failure raises errors.AttestationError with a machine-readable errors.Reason.
Identifier derivation (permanent identifier = hex SHA-256 of the EK SPKI): see ca/device_identity.py.
"""
