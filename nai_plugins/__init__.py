"""First-party plugins shipped with nai, one module per plugin; each is enabled by a
`plugins.NAME` section in the server config (see config.example.yaml)."""
