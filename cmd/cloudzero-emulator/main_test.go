package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type running struct {
	url            string
	stdout, stderr *syncBuffer
	client         *http.Client
}

// start runs the command in-process and stops it when the test ends.
func start(t *testing.T, env map[string]string, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stdout: &syncBuffer{}, stderr: &syncBuffer{},
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), func(k string) string { return env[k] },
			r.stdout, r.stderr, ready)
	}()
	select {
	case r.url = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("run returned early: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("emulator did not start")
	}
	t.Cleanup(func() {
		r.client.CloseIdleConnections()
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("emulator did not stop")
		}
	})
	return r
}

func (r *running) post(t *testing.T, key string) int {
	t.Helper()
	ts := time.Now().UTC().Truncate(time.Hour).Format(time.RFC3339)
	b, err := json.Marshal(map[string]any{"records": []any{map[string]any{
		"timestamp": ts, "granularity": "HOURLY", "element_name": "cust", "value": "1.5"}}})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, r.url+"/unit-cost/v1/telemetry/allocation/demo/sum", bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestRunWithFlags(t *testing.T) {
	addrFile := filepath.Join(t.TempDir(), "addr")
	r := start(t, nil, "-api-key", "flag-key-XYZ", "-addr-file", addrFile,
		"-faults", `{"steps":[{"count":1,"status":503,"retry_after_seconds":1}]}`)
	assert.True(t, strings.HasPrefix(r.url, "http://127.0.0.1:"))
	b, err := os.ReadFile(addrFile)
	require.NoError(t, err)
	assert.Equal(t, r.url+"\n", string(b))
	assert.Contains(t, r.stdout.String(), "listening on "+r.url)

	assert.Equal(t, 403, r.post(t, "wrong"))
	assert.Equal(t, 503, r.post(t, "flag-key-XYZ"), "injected by -faults")
	assert.Equal(t, 200, r.post(t, "flag-key-XYZ"))

	logs := r.stderr.String()
	assert.Contains(t, logs, "POST /unit-cost/v1/telemetry/allocation/demo/sum -> 200 records=1")
	assert.Contains(t, logs, "-> 503")
	assert.NotContains(t, logs+r.stdout.String(), "flag-key-XYZ", "the key is never printed")
}

func TestRunKeyFromEnv(t *testing.T) {
	r := start(t, map[string]string{"CLOUDZERO_API_KEY": "env-key-123"}, "-quiet")
	assert.Equal(t, 200, r.post(t, "env-key-123"))
	assert.Equal(t, 403, r.post(t, DemoAPIKey))
	assert.Contains(t, r.stdout.String(), "$CLOUDZERO_API_KEY")
	assert.NotContains(t, r.stdout.String()+r.stderr.String(), "env-key-123")
	assert.NotContains(t, r.stderr.String(), "POST", "-quiet")
}

func TestRunDemoKey(t *testing.T) {
	r := start(t, nil, "-records-per-second", "1", "-burst", "1")
	assert.Equal(t, 200, r.post(t, DemoAPIKey))
	assert.Equal(t, 429, r.post(t, DemoAPIKey), "-records-per-second")
	assert.Contains(t, r.stdout.String(), `demo key "demo-key"`)
}

func TestRunFaultsFromFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "faults.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"steps":[{"count":1,"status":429}]}`), 0o600))
	r := start(t, nil, "-faults", "@"+file)
	assert.Equal(t, 429, r.post(t, DemoAPIKey))
	assert.Equal(t, 200, r.post(t, DemoAPIKey))
}

func TestRunBadArguments(t *testing.T) {
	tests := [][]string{
		{"-no-such-flag"},
		{"extra"},
		{"-faults", `{"steps":`},
		{"-faults", `{"steps":[{"count":0}]}`},
		{"-faults", "@/nonexistent/faults.json"},
		{"-records-per-second", "-5"},
		{"-listen", "127.0.0.1:notaport"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out, errOut syncBuffer
			err := run(ctx, args, func(string) string { return "" }, &out, &errOut, nil)
			assert.Error(t, err)
		})
	}
	err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, io.Discard, io.Discard, nil)
	assert.ErrorIs(t, err, flag.ErrHelp)
}
