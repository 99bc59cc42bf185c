//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

// directApp runs examples/direct-usage-app (the usage app's workload,
// exported in-process by package cloudzerometric, no collector) against
// em with the exporter's shipped defaults plus settings, and returns its
// summary.
func directApp(t *testing.T, em *emulator.Instance, storageDir string, settings ...string) appSummary {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`exporters:
  cloudzero:
    endpoint: %s
    api_key: ${env:CZ_E2E_KEY}
    streams:
      - {name: app-requests, metrics: [app.requests], element_name: customer.id, filter: {"custom:feature": feature}}
      - {name: app-request-count, metrics: [app.request.duration], element_name: customer.id, filter: {"custom:feature": feature}, value: count}
      - {name: app-session-seconds, metrics: [app.active_sessions], element_name: customer.id, value: integral}
%s`, em.URL, indent(settings))
	cfgPath := filepath.Join(dir, "app.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))
	summary := filepath.Join(dir, "summary.json")
	args := []string{"-config", cfgPath, "-duration", "8s", "-interval", "1s", "-customers", "3", "-seed", "11", "-summary-file", summary}
	if storageDir != "" {
		args = append(args, "-storage-dir", storageDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t, "DIRECT_APP_BIN"), args...)
	cmd.Env = append(os.Environ(), "CZ_E2E_KEY="+apiKey)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "direct-usage-app:\n%s", tail(string(out), 4000))
	assert.NotContains(t, string(out), apiKey, "the API key appeared in the app's output")
	var sum appSummary
	b, err := os.ReadFile(summary)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &sum))
	return sum
}

func indent(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// TestDirectExportWithFaults: the example workload exported in-process,
// without a collector, while CloudZero fails: exact totals per (stream,
// customer, feature) once the app has shut down.
func TestDirectExportWithFaults(t *testing.T) {
	one := 1
	storm := emulator.FaultConfig{Repeat: true, Steps: []emulator.FaultStep{
		{Count: 2, Status: 429, RetryAfterSeconds: &one},
		{Count: 2, Status: 503},
		{Count: 1, Status: 502},
		{Count: 3}, // pass
	}}
	for _, tc := range []struct {
		name     string
		faults   emulator.FaultConfig
		storage  bool
		settings []string
		check    func(t *testing.T, l emulator.Ledger)
	}{
		{
			// The shipped defaults (flush_interval 5m): everything is sent by
			// the shutdown, into the storm.
			name: "defaults, storm at shutdown", faults: storm,
		},
		{
			// flush_interval: 1s, the setting under test: the storm meets the
			// periodic sends of the run too, not only the shutdown's.
			name: "sends during the run", faults: storm, settings: []string{"flush_interval: 1s"},
		},
		{
			// delivery: replace (needs the storage directory), and requests
			// CloudZero applies but answers 503: re-sent totals, no duplicates.
			name: "replace, applied 503s", storage: true, settings: []string{"delivery: replace", "flush_interval: 1s"},
			faults: emulator.FaultConfig{Repeat: true, Steps: []emulator.FaultStep{{Count: 2}, {Count: 1, Status: 503, Apply: true}}},
			check: func(t *testing.T, l emulator.Ledger) {
				assert.Positive(t, l.AmbiguousAppliedRequests, "some requests were applied and answered 503")
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			em, err := emulator.Start("127.0.0.1:0", emulator.Config{APIKey: apiKey})
			require.NoError(t, err)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = em.Shutdown(ctx)
			})
			require.NoError(t, em.Server.SetFaults(tc.faults))
			storage := ""
			if tc.storage {
				storage = filepath.Join(t.TempDir(), "storage")
			}
			from := time.Now()
			sum := directApp(t, em, storage, tc.settings...)
			want := expectation{}
			want.app(sum)
			l := em.Ledger()
			lost, dup := report(t, tc.name, want, l, from)
			assert.Zero(t, lost.Sign(), "units lost")
			assert.Zero(t, dup.Sign(), "units duplicated")
			failed := l.RequestsByStatus["429"] + l.RequestsByStatus["503"] + l.RequestsByStatus["502"]
			assert.Positive(t, failed, "the faults met the sends: %v", l.RequestsByStatus)
			got := received(t, l, from, time.Now())
			for _, c := range []string{"customer-01", "customer-02", "customer-03"} {
				v := got[key(noExpectation, c, "")]
				if assert.NotNil(t, v, "no session-seconds for %s", c) {
					assert.Positive(t, v.Sign())
				}
			}
			if tc.check != nil {
				tc.check(t, l)
			}
		})
	}
}
