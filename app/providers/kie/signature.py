"""Kie.ai callback signatures: base64(HMAC-SHA256(key, taskId + "." + timestamp)).

Shared by the gateway (to verify) and the emulator (to sign), so both speak the same format.
"""

import base64
import hashlib
import hmac

SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"


def sign(key: str, task_id: str, timestamp: str) -> str:
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def is_valid(key: str, task_id: str, timestamp: str, signature: str) -> bool:
    return hmac.compare_digest(sign(key, task_id, timestamp).encode(), signature.encode())
