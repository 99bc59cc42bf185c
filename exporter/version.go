package exporter

import (
	"runtime"
	"strings"
)

// Version is this module's release. The distribution in builder-config.yaml
// and the top entry of CHANGELOG.md carry the same number (a test checks).
const Version = "0.1.0"

// userAgentProduct names this exporter in every request's User-Agent.
const userAgentProduct = "cloudzero-otel-exporter/" + Version

// UserAgent is the User-Agent of requests sent on behalf of host, the program
// that embeds the exporter ("otelcol-cloudzero/0.1.0"; empty for none):
// "cloudzero-otel-exporter/0.1.0 (otelcol-cloudzero/0.1.0; linux/amd64)".
// CloudZero can then tell which exporter, and which build, sent a record.
func UserAgent(host string) string {
	parts := []string{runtime.GOOS + "/" + runtime.GOARCH}
	if host = strings.TrimSpace(host); host != "" {
		parts = append([]string{host}, parts...)
	}
	return userAgentProduct + " (" + strings.Join(parts, "; ") + ")"
}
