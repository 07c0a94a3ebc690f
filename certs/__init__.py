"""Certificate tooling with `cryptography`: a CA and serving certificates for the webhook, client certificates for
the test control plane. Imports only the standard library and cryptography."""
