"""The admission webhook: an aiohttp HTTPS server that validates and defaults DatabaseBackups. Imports `common`."""
