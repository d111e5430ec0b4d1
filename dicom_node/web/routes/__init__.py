"""The dashboard's routes by concern: `login` (sessions), `pages` (HTML for admins), `api` (JSON for scripts
and the RIS), `probes` (/healthz and /metrics for orchestration and monitoring)."""
