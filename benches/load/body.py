"""Prints the ~1 KB create-org body of the validation rows (benches/load.sh): valid under the
shipped Partner API spec (config/openapi/partner-api.yaml, CreateOrgRequest)."""
import json

body = {
    "name": "Acme Tours",
    "external_id": "customer-12345",
    "website": "https://acmetours.example",
    "language": "en",
    "ai_instructions": (
        "You are a support agent for Acme Tours. Help customers with bookings, changes, "
        "refunds and questions about destinations. Be concise and friendly; answer in the "
        "customer's language; never promise a refund before checking the booking; hand over "
        "to a human when a customer asks for one or is upset. "
    ) * 3,
}
text = json.dumps(body, separators=(",", ":"))
assert 900 <= len(text) <= 1100, len(text)
print(text)
