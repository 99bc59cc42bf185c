//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

// TestReplayDryRunFile: one collector runs two cloudzero exporters on the
// same pipeline: "cloudzero" sends to one emulator (the direct run, shipped
// defaults), "cloudzero/dry" writes a dry_run_file (the two settings under
// test: dry_run and dry_run_file). The cloudzero command replays that file
// into a second emulator through a 503/429 storm: both ledgers must hold
// the same keys with the same values, and the generators' exact totals.
func TestReplayDryRunFile(t *testing.T) {
	p := newPipeline(t)
	dryFile := filepath.Join(t.TempDir(), "dry.jsonl")
	cfg, err := os.ReadFile(p.cfgPath)
	require.NoError(t, err)
	s := string(cfg)
	start := strings.Index(s, "  cloudzero:\n")
	end := strings.Index(s, "service:\n")
	require.True(t, start > 0 && end > start, s)
	dry := strings.Replace(s[start:end], "  cloudzero:\n", "  cloudzero/dry:\n    dry_run: true\n    dry_run_file: "+dryFile+"\n", 1)
	s = s[:end] + dry + s[end:]
	s = strings.Replace(s, "exporters: [cloudzero]}", "exporters: [cloudzero, cloudzero/dry]}", 1)
	require.NoError(t, os.WriteFile(p.cfgPath, []byte(s), 0o600))

	p.startCollector()
	from := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	want := p.generate(ctx, 200, "200", "5s")
	p.stopCollector(syscall.SIGTERM)
	direct := p.em.Ledger()
	lost, dup := report(t, "direct run", want, direct, from)
	require.Zero(t, lost.Sign())
	require.Zero(t, dup.Sign())

	em, err := emulator.Start("127.0.0.1:0", emulator.Config{APIKey: apiKey})
	require.NoError(t, err)
	t.Cleanup(func() { _ = em.Shutdown(context.Background()) })
	one := 1
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{
		{Count: 2, Status: 503}, {Count: 1, Status: 429, RetryAfterSeconds: &one},
	}}))
	cmd := exec.CommandContext(ctx, bin(t, "CLOUDZERO_BIN"), "replay", "--endpoint", em.URL, "--yes", dryFile)
	cmd.Env = append(os.Environ(), "CLOUDZERO_API_KEY="+apiKey)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Logf("cloudzero replay:\n%s", tail(string(out), 3000))
	assert.NotContains(t, string(out), apiKey)

	replayed := em.Ledger()
	lost, dup = report(t, "replayed", want, replayed, from)
	assert.Zero(t, lost.Sign(), "units lost")
	assert.Zero(t, dup.Sign(), "units duplicated")
	assert.Equal(t, entryValues(direct), entryValues(replayed), "the replayed ledger is the direct run's, key by key")
	assert.EqualValues(t, 3, replayed.RequestsByStatus["503"]+replayed.RequestsByStatus["429"])
}

// entryValues maps every stored key to its value.
func entryValues(l emulator.Ledger) map[string]string {
	out := map[string]string{}
	for _, s := range l.Streams {
		for _, e := range s.Entries {
			b := s.Name + " " + e.Timestamp + " " + e.Granularity + " " + e.ElementName
			for _, k := range s.FilterKeys {
				b += " " + k + "=" + strings.Join(e.Filter[k], "|")
			}
			out[b] = e.Value
		}
	}
	return out
}
