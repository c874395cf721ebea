//! The deployment files — `Dockerfile`, `docker-compose.yml`, `deploy/prometheus/`,
//! `deploy/grafana/`, `deploy/k8s/` — are run only by people with Docker or Kubernetes,
//! never by `make test` (which only validates the Kubernetes manifests offline:
//! scripts/validate-k8s.sh). These tests keep them true to the service: every
//! `CHAT_ANALYTICS__SECTION__KEY` they set must be a setting the service accepts, ports,
//! topic and credentials must agree with the settings, and every metric a dashboard or
//! alert queries must be one of the fixed names of SPEC.md. Renaming a config key or a
//! metric breaks a test here instead of a deployment.

#[path = "../support/mod.rs"]
mod support;

mod compose;
mod dockerfile;
mod k8s;
mod k8s_autoscaling;
mod k8s_manifests;
mod manifest;
mod monitoring;
