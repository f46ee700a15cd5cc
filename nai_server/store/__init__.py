"""Durable state: TinyDB with atomic storage, and the content-addressed blob store."""
