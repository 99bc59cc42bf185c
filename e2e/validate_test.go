//go:build e2e

// Package e2e runs the ocb-built collector binary (COLLECTOR_BIN, built by
// `make build`). Run with `make e2e`.
package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.yaml.in/yaml/v3"
)

func collectorBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("COLLECTOR_BIN")
	require.NotEmpty(t, bin, "COLLECTOR_BIN must point at the built collector (make e2e sets it)")
	require.FileExists(t, bin)
	return bin
}

// runCollector runs the collector with args, bounded in time, and returns
// its combined output and error.
func runCollector(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, collectorBin(t), args...).CombinedOutput()
	return string(out), err
}

func TestComponentsListsCloudZero(t *testing.T) {
	out, err := runCollector(t, "components")
	require.NoError(t, err, out)
	assert.Regexp(t, regexp.MustCompile(`(?m)^\s*- name: cloudzero$`), out)
	assert.Contains(t, out, "file_storage")
	assert.Contains(t, out, "health_check")
	assert.Contains(t, out, "otlp")
}

// pipelineConfig wraps one cloudzero exporter config in a collector config.
func pipelineConfig(t *testing.T, exporterCfg map[string]any) string {
	t.Helper()
	cfg := map[string]any{
		"receivers": map[string]any{"otlp": map[string]any{"protocols": map[string]any{
			"http": map[string]any{"endpoint": "127.0.0.1:4318"},
		}}},
		"exporters": map[string]any{"cloudzero": exporterCfg},
		"service": map[string]any{"pipelines": map[string]any{"metrics": map[string]any{
			"receivers": []string{"otlp"}, "exporters": []string{"cloudzero"},
		}}},
	}
	b, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "collector.yaml")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return path
}

func TestValidateNamedConfigs(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("..", "testdata", "config.yaml"))
	require.NoError(t, err)
	// Each invalid config must be refused with an error naming its field
	// (and stream, where it is about a stream).
	invalid := map[string]string{
		"missing_api_key":         "api_key: must be set",
		"bad_endpoint":            "endpoint:",
		"no_streams":              "streams: at least one stream is required",
		"duplicate_stream":        `streams[1] ("requests"): name: duplicate`,
		"bad_stream_name":         `streams[0] ("requests per customer"): name:`,
		"empty_metrics":           `streams[0] ("requests"): metrics:`,
		"empty_element_name":      `streams[0] ("requests"): element_name:`,
		"too_many_filter_keys":    `streams[0] ("requests"): filter: 6 keys`,
		"filter_key_in_both":      `streams[0] ("requests"): static_filter: key "custom:feature" is also in filter`,
		"too_many_static_values":  `streams[0] ("requests"): static_filter: key "tag:owner" has 21 values`,
		"bare_prefix":             `streams[0] ("requests"): filter: key "custom:" is a bare prefix`,
		"empty_filter_key":        `streams[0] ("requests"): static_filter: key "" is empty`,
		"bad_granularity":         `streams[0] ("requests"): granularity: "WEEKLY"`,
		"bad_value_mode":          `streams[0] ("requests"): value: "average"`,
		"default_not_in_filter":   `streams[0] ("requests"): filter_defaults: key "tag:environment"`,
		"bad_rate_limit":          "rate_limit.records_per_second: must be positive",
		"typo_in_stream":          `streams[0]: unknown key "granularty"`,
		"several_problems":        `streams[1] ("ok"): value:`,
		"bad_delivery":            `delivery: "upsert" must be sum or replace`,
		"replace_without_storage": "delivery: replace needs storage",
		"bad_delivery_timing":     "flush_interval: must be at least 1s",
		"retry_gives_up":          "retry_on_failure.max_elapsed_time: must be 0",
		"retry_disabled":          "retry_on_failure.enabled: must be true",
		"old_sending_queue":       "sending_queue: no longer applies",
	}
	seen := 0
	for id, v := range cm.ToStringMap() {
		name := strings.TrimPrefix(id, "cloudzero/")
		exporterCfg, _ := v.(map[string]any)
		t.Run(name, func(t *testing.T) {
			out, err := runCollector(t, "validate", "--config="+pipelineConfig(t, exporterCfg))
			want, isInvalid := invalid[name]
			if !isInvalid {
				assert.NoError(t, err, out)
				return
			}
			seen++
			var exitErr *exec.ExitError
			require.ErrorAs(t, err, &exitErr, "validate must exit non-zero: %s", out)
			assert.Contains(t, out, want)
			assert.NotContains(t, out, "secret-key")
		})
	}
	assert.Equal(t, len(invalid), seen, "every invalid config of the table is in testdata/config.yaml")
}

// TestValidateReadmeExample checks the collector YAML example of README.md.
func TestValidateReadmeExample(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)<!-- example-config -->\\s*```yaml\\n(.*?)```").FindSubmatch(readme)
	require.NotNil(t, m, "README.md must hold the example under <!-- example-config -->")
	path := filepath.Join(t.TempDir(), "example.yaml")
	require.NoError(t, os.WriteFile(path, m[1], 0o600))
	t.Setenv("CLOUDZERO_API_KEY", "example-key")
	out, err := runCollector(t, "validate", "--config="+path)
	assert.NoError(t, err, out)
}
