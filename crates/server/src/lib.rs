//! The daemon's HTTP surface: `/healthz`, `/readyz`, `/metrics`, the approvals REST API and
//! registry push webhooks. Handlers translate HTTP to calls on a backend trait; no policy here.
