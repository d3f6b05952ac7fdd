"""ikepki's own object identifiers.

Arcs stay small: many decoders (pkilint, older Windows) reject arcs above 32 bits, which
rules out a 2.25 UUID arc. The default arc sits under IANA's documentation enterprise
number 32473 (RFC 5612); a production deployment with its own
Private Enterprise Number sets ``IKEPKI_OID_ARC`` (same value for the CA and every relying
party) before starting.
"""

from __future__ import annotations

import os

from cryptography.x509 import ObjectIdentifier

IKEPKI_ARC = os.environ.get("IKEPKI_OID_ARC", "1.3.6.1.4.1.32473.7")
PROFILE_POLICY_ARC = f"{IKEPKI_ARC}.1"  # certificate policy per profile: ARC.1.<n>
PUSH_SIGNER_EKU = ObjectIdentifier(f"{IKEPKI_ARC}.2.1")  # EKU of the revocation push signer
IDENTIFIER_ASSIGNER_ARC = f"{IKEPKI_ARC}.3"  # RFC 4043 assigner OIDs (e.g. .3.1: TPM EK-derived identifiers)
# Device posture (issue 17): certificate policy per posture level, ARC.4.<n>; a relying party maps them to
# traffic selectors. A posture-marked certificate's notAfter never exceeds the expiry of the TPM evidence
# it was issued on (ca.authority caps it), so "valid" implies "evidence not expired".
POSTURE_POLICY_ARC = f"{IKEPKI_ARC}.4"
POSTURE_COMPLIANT = ObjectIdentifier(f"{POSTURE_POLICY_ARC}.1")  # TPM-quoted state matched the reference values
POSTURE_QUARANTINE = ObjectIdentifier(f"{POSTURE_POLICY_ARC}.2")  # remediation-only access
