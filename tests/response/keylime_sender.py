"""Run Keylime's own revocation webhook notifier (PyPI ``keylime``, keylime/revocation_notifier.py
``WebhookNotificationManager``) once, as a verifier would after a failed attestation.

The message is built as keylime/cloud_verifier_common.py ``prepare_error`` builds it (that module
needs the ``gpg`` bindings, so it is not imported) and signed with Keylime's ``crypto.rsa_sign``.
Keylime reads its settings from ``KEYLIME_VERIFIER_CONFIG``. Exit 0 when Keylime's worker is done
(it logs whether the webhook answered 200/202).

usage: python keylime_sender.py REVOCATION_KEY_PEM AGENT_ID
"""

from __future__ import annotations

import sys
import time

from keylime import crypto, json, revocation_notifier


def main() -> int:
    key = crypto.rsa_import_privkey(open(sys.argv[1], "rb").read())  # noqa: SIM115
    revocation = {"type": "revocation", "ip": "127.0.0.1", "agent_id": sys.argv[2], "port": 9002,
                  "tpm_policy": '{"mask": "0x408000"}', "meta_data": "{}", "event_time": time.asctime(),
                  "event_id": "pcr_validation.invalid_pcr_7", "severity_label": "emergency",
                  "context": '{"pcr": 7}'}
    tosend = {"msg": json.dumps(revocation).encode("utf-8")}
    tosend["signature"] = crypto.rsa_sign(key, tosend["msg"])
    revocation_notifier.notify_webhook(tosend)
    revocation_notifier._get_webhook_manager().shutdown_workers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
