// Package deploy holds the deployment recipes of otelcol-cloudzero (image,
// Kubernetes manifests, Helm chart values, the scale-out first tier) and the
// tests that hold them to their invariants. It is a module of its own so
// that the exporter's module does not depend on the Kubernetes API types.
package deploy
