"""HTTP adapters: the push API and pages (in), the CRM and webhooks (out)."""
