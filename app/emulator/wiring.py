"""The environment that points a gateway at an emulator: its Kie.ai (and kvid.ai) and their keys."""

from __future__ import annotations


def gateway_environment(
    emulator_url: str, *, api_key: str, hmac_key: str, kvid_key: str | None = None
) -> dict[str, str]:
    """Kie.ai's API, upload API and signed callbacks all at emulator_url; kvid.ai too when kvid_key is given.

    Callers add their own variables (database, timings) to the result.
    """
    environment = {
        "KIEAI_API_KEY": api_key,
        "KIEAI_BASE_URL": emulator_url,
        "KIEAI_UPLOAD_BASE_URL": emulator_url,
        "KIEAI_WEBHOOK_HMAC_KEY": hmac_key,
    }
    if kvid_key is not None:
        environment |= {"KVID_API_KEY": kvid_key, "KVID_BASE_URL": emulator_url}
    return environment
