"""Device posture: TPM-quoted device state with every enrollment and renewal, a policy verdict
(``compliant`` / ``quarantine`` / ``refused``) carried into the certificate, and posture events pushed
to gateways.  See the README section "Device posture" for what it proves and what it cannot."""
