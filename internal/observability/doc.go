// Package observability holds no code: its test proves that the shipped Grafana
// dashboard (config/grafana) and Prometheus alert rules (config/prometheus) query only
// metrics the manager registers, collected from the metrics packages' collectors
// (internal/controller.Collectors and the gateway's exported vectors), so a renamed or
// removed metric fails the build instead of leaving an empty panel or a silent alert.
package observability
