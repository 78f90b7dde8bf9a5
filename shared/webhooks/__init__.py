"""Webhooks to tenants: the outbox written with each job transition (`outbox`), its
delivery with retries (`delivery`) and Standard Webhooks signatures (`signing`).
Which addresses may be called is `shared.address_guard`."""
