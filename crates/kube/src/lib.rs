//! Kubernetes and Helm adapter: discovery of workloads and Helm releases, image patches,
//! `helm upgrade`/`rollback`, and rollout watching. No policy lives here.
