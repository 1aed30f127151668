"""The keys the emulator tier's in-process emulator is made with."""

API_KEY = "test-key"
HMAC_KEY = "test-hmac-key"
KVID_KEY = "test-kvid-key"
