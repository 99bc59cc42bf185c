//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

const apiKey = "e2e-api-key"

// Histogram samples telemetrygen v0.161 cycles through: every point has 10
// observations, and these sums (pkg/metrics/worker.go).
var telemetrygenHistogramSums = []int64{3940, 4455, 5337, 4477, 4670, 5670, 5091, 3420, 5917, 3988}

func bin(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	require.NotEmpty(t, p, "%s must point at a binary (make e2e sets it)", env)
	require.FileExists(t, p)
	return p
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// pipeline is one emulator and the collector configuration sending to it.
type pipeline struct {
	t          *testing.T
	em         *emulator.Instance
	cfgPath    string
	grpc, http int
	logDir     string
	collector  *exec.Cmd
	runs       int
}

var collectorTemplate = template.Must(template.New("cfg").Parse(`
extensions:
  file_storage:
    directory: {{.StorageDir}}
    create_directory: true
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:{{.GRPC}}"}
      http: {endpoint: "127.0.0.1:{{.HTTP}}"}
exporters:
  cloudzero:
    endpoint: {{.Endpoint}}
    api_key: {{.APIKey}}
    streams:
      - {name: tg-delta-sum, metrics: [tg.delta.sum], element_name: customer.id, filter: {"custom:feature": feature}}
      - {name: tg-cum-sum, metrics: [tg.cum.sum], element_name: customer.id, filter: {"custom:feature": feature}}
      - {name: tg-hist-count, metrics: [tg.delta.hist], element_name: customer.id, filter: {"custom:feature": feature}, value: count}
      - {name: tg-hist-sum, metrics: [tg.delta.hist], element_name: customer.id, filter: {"custom:feature": feature}, value: sum}
      - {name: app-requests, metrics: [app.requests], element_name: customer.id, filter: {"custom:feature": feature}}
      - {name: app-request-count, metrics: [app.request.duration], element_name: customer.id, filter: {"custom:feature": feature}, value: count}
      - {name: app-session-seconds, metrics: [app.active_sessions], element_name: customer.id, value: integral}
      - {name: lg-requests, metrics: [lg.requests], element_name: customer.id, filter: {"custom:feature": feature}}
{{- range .Settings}}
    {{.}}
{{- end}}
service:
  extensions: [file_storage]
  telemetry:
    metrics: {level: none}
  pipelines:
    metrics: {receivers: [otlp], exporters: [cloudzero]}
`))

// newPipeline starts an emulator and writes the collector's config: the
// exporter's shipped defaults plus settings, the lines a test is about
// (e.g. "storage: file_storage"), each test saying why.
func newPipeline(t *testing.T, settings ...string) *pipeline {
	t.Helper()
	em, err := emulator.Start("127.0.0.1:0", emulator.Config{APIKey: apiKey, Logger: nil})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = em.Shutdown(ctx)
	})
	dir := t.TempDir()
	p := &pipeline{t: t, em: em, grpc: freePort(t), http: freePort(t), logDir: dir}
	var buf bytes.Buffer
	require.NoError(t, collectorTemplate.Execute(&buf, map[string]any{
		"StorageDir": filepath.Join(dir, "storage"), "GRPC": p.grpc, "HTTP": p.http,
		"Endpoint": em.URL, "APIKey": apiKey, "Settings": settings,
	}))
	p.cfgPath = filepath.Join(dir, "collector.yaml")
	require.NoError(t, os.WriteFile(p.cfgPath, buf.Bytes(), 0o600))
	t.Cleanup(func() {
		if p.collector != nil {
			_ = p.collector.Process.Kill()
			_ = p.collector.Wait()
		}
		if t.Failed() {
			for i := 1; i <= p.runs; i++ {
				b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("collector-%d.log", i)))
				t.Logf("collector run %d log (tail):\n%s", i, tail(string(b), 4000))
			}
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// startCollector starts the collector and waits until its receivers listen.
func (p *pipeline) startCollector() {
	t := p.t
	t.Helper()
	p.runs++
	logf, err := os.Create(filepath.Join(p.logDir, fmt.Sprintf("collector-%d.log", p.runs)))
	require.NoError(t, err)
	defer logf.Close()
	cmd := exec.Command(bin(t, "COLLECTOR_BIN"), "--config="+p.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	p.collector = cmd
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.http), 100*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, 60*time.Second, 100*time.Millisecond, "the collector did not start")
}

// stopCollector sends sig and waits for the collector to exit.
func (p *pipeline) stopCollector(sig syscall.Signal) {
	p.t.Helper()
	stopProcess(p.t, p.collector, sig, "the collector")
	p.collector = nil
}

// stopProcess sends sig to cmd and waits for it to exit, killing it (and
// failing the test) after 90 s.
func stopProcess(t *testing.T, cmd *exec.Cmd, sig syscall.Signal, what string) {
	t.Helper()
	require.NoError(t, cmd.Process.Signal(sig))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not stop within 90s", what)
	}
}

// telemetrygen runs the contrib load generator (a real OTLP gRPC client).
func (p *pipeline) telemetrygen(ctx context.Context, args ...string) error {
	args = append([]string{"metrics", "--otlp-endpoint", fmt.Sprintf("127.0.0.1:%d", p.grpc), "--otlp-insecure", "--workers", "1"}, args...)
	cmd := exec.CommandContext(ctx, bin(p.t, "TELEMETRYGEN_BIN"), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("telemetrygen %v: %w\n%s", args, err, tail(string(out), 2000))
	}
	return nil
}

// appSummary is what examples/usage-app reports it recorded.
type appSummary struct {
	Requests        map[string]map[string]int64 `json:"requests"`
	RequestDuration map[string]map[string]struct {
		Count int64 `json:"count"`
	} `json:"request_duration"`
}

// usageApp runs the example app (OTel SDK, OTLP/HTTP, cumulative) and returns its summary.
func (p *pipeline) usageApp(ctx context.Context, duration string, seed int) (appSummary, error) {
	return p.usageAppFor(ctx, duration, seed, 3)
}

// usageAppFor is usageApp with that many customers.
func (p *pipeline) usageAppFor(ctx context.Context, duration string, seed, customers int) (appSummary, error) {
	path := filepath.Join(p.logDir, fmt.Sprintf("app-%d.json", seed))
	cmd := exec.CommandContext(ctx, bin(p.t, "USAGE_APP_BIN"), "-endpoint", fmt.Sprintf("127.0.0.1:%d", p.http),
		"-duration", duration, "-interval", "1s", "-customers", strconv.Itoa(customers), "-seed", strconv.Itoa(seed), "-summary-file", path)
	var sum appSummary
	if out, err := cmd.CombinedOutput(); err != nil {
		return sum, fmt.Errorf("usage-app: %w\n%s", err, tail(string(out), 2000))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return sum, err
	}
	return sum, json.Unmarshal(b, &sum)
}

// expectation maps "stream|element|feature" to the exact total expected.
type expectation map[string]*big.Rat

func key(stream, element, feature string) string { return stream + "|" + element + "|" + feature }

func (e expectation) add(k string, v int64) {
	if e[k] == nil {
		e[k] = new(big.Rat)
	}
	e[k].Add(e[k], big.NewRat(v, 1))
}

// telemetrygenSums adds what telemetrygen sends for n points of each kind.
func (e expectation) telemetrygen(customer string, n int64) {
	e.add(key("tg-delta-sum", customer, "search"), n*(n-1)/2) // values 0..n-1
	e.add(key("tg-cum-sum", customer, "search"), n-1)         // cumulative 0..n-1, started after the collector
	e.add(key("tg-hist-count", customer, "search"), 10*n)
	var sum int64
	for i := range n {
		sum += telemetrygenHistogramSums[i%10]
	}
	e.add(key("tg-hist-sum", customer, "search"), sum)
}

func (e expectation) app(s appSummary) {
	for c, fs := range s.Requests {
		for f, v := range fs {
			e.add(key("app-requests", c, f), v)
		}
	}
	for c, fs := range s.RequestDuration {
		for f, o := range fs {
			e.add(key("app-request-count", c, f), o.Count)
		}
	}
}

// received sums what CloudZero holds per (stream, element, feature), over
// buckets, checking every bucket timestamp is within [from, to].
func received(t *testing.T, l emulator.Ledger, from, to time.Time) expectation {
	t.Helper()
	got := expectation{}
	for _, s := range l.Streams {
		for _, e := range s.Entries {
			ts, err := time.Parse(time.RFC3339, e.Timestamp)
			require.NoError(t, err)
			assert.False(t, ts.Before(from.UTC().Truncate(time.Hour)) || ts.After(to), "bucket %s outside the run", e.Timestamp)
			v, ok := new(big.Rat).SetString(e.Value)
			require.True(t, ok, e.Value)
			k := key(s.Name, e.ElementName, strings.Join(e.Filter["custom:feature"], ","))
			if got[k] == nil {
				got[k] = new(big.Rat)
			}
			got[k].Add(got[k], v)
		}
	}
	return got
}

// compare reports lost and duplicated units per key of want.
func compare(want, got expectation) (lost, dup *big.Rat, lines []string) {
	lost, dup = new(big.Rat), new(big.Rat)
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		g := got[k]
		if g == nil {
			g = new(big.Rat)
		}
		d := new(big.Rat).Sub(g, want[k])
		switch d.Sign() {
		case -1:
			lost.Sub(lost, d)
		case 1:
			dup.Add(dup, d)
		}
		lines = append(lines, fmt.Sprintf("%-45s sent %-10s received %s", k, want[k].RatString(), g.RatString()))
	}
	return lost, dup, lines
}

// waitForTotals waits until CloudZero holds at least want everywhere (or
// the deadline passes) and returns the ledger.
func (p *pipeline) waitForTotals(want expectation, from time.Time, within time.Duration) emulator.Ledger {
	start := time.Now()
	deadline := start.Add(within)
	for {
		l := p.em.Ledger()
		lost, _, _ := compare(want, received(p.t, l, from, time.Now()))
		if lost.Sign() == 0 {
			p.t.Logf("CloudZero held every unit sent %s after the load", time.Since(start).Round(100*time.Millisecond))
			return l
		}
		if time.Now().After(deadline) {
			p.t.Logf("CloudZero still lacked %s units %s after the load", lost.RatString(), within)
			return l
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// generate runs telemetrygen (delta and cumulative sums, delta histograms)
// for two customers and, unless appDuration is empty, the usage app at once,
// and returns what they sent.
func (p *pipeline) generate(ctx context.Context, n int64, rate string, appDuration string, extraArgs ...string) expectation {
	t := p.t
	want := expectation{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for _, c := range []string{"tg-a", "tg-b"} {
		want.telemetrygen(c, n)
		for _, kind := range [][]string{
			{"--metric-type", "Sum", "--aggregation-temporality", "delta", "--otlp-metric-name", "tg.delta.sum"},
			{"--metric-type", "Sum", "--aggregation-temporality", "cumulative", "--otlp-metric-name", "tg.cum.sum"},
			{"--metric-type", "Histogram", "--aggregation-temporality", "delta", "--otlp-metric-name", "tg.delta.hist"},
		} {
			args := append(append(kind, "--metrics", strconv.FormatInt(n, 10), "--rate", rate,
				"--telemetry-attributes", `customer.id="`+c+`"`, "--telemetry-attributes", `feature="search"`), extraArgs...)
			wg.Go(func() { errs <- p.telemetrygen(ctx, args...) })
		}
	}
	wg.Go(func() {
		if appDuration == "" {
			return
		}
		s, err := p.usageApp(ctx, appDuration, 7)
		mu.Lock()
		want.app(s)
		mu.Unlock()
		errs <- err
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return want
}

// noExpectation: streams whose totals depend on timing (the integral of
// sessions), checked for presence only.
const noExpectation = "app-session-seconds"

func report(t *testing.T, name string, want expectation, l emulator.Ledger, from time.Time) (lost, dup *big.Rat) {
	t.Helper()
	got := received(t, l, from, time.Now())
	for k := range got {
		if _, ok := want[k]; !ok && !strings.HasPrefix(k, noExpectation+"|") {
			t.Errorf("%s: CloudZero holds %s under %s, which no generator sent", name, got[k].RatString(), k)
		}
	}
	lost, dup, lines := compare(want, got)
	t.Logf("%s: lost %s units, duplicated %s units; requests by status %v; ambiguous applied requests %d\n  %s",
		name, lost.RatString(), dup.RatString(), l.RequestsByStatus, l.AmbiguousAppliedRequests, strings.Join(lines, "\n  "))
	assert.Zero(t, l.RequestsByStatus["400"], "no request refused as invalid: %v", l.RecentErrors)
	assert.Zero(t, l.UnalignedRecords, "every timestamp is a bucket start")
	assert.Zero(t, l.NonCanonicalTimestamps)
	assert.Zero(t, l.ValuesOver15Digits, "values are sent with at most 15 significant digits")
	return lost, dup
}

// TestPipelineExactTotals: telemetrygen and the example app through the
// built collector; CloudZero must hold exactly what they sent.
func TestPipelineExactTotals(t *testing.T) {
	p := newPipeline(t)
	p.startCollector()
	from := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	want := p.generate(ctx, 300, "200", "6s")
	p.stopCollector(syscall.SIGTERM) // shutdown drains the queue
	l := p.em.Ledger()
	lost, dup := report(t, "exact totals", want, l, from)
	assert.Zero(t, lost.Sign(), "units lost")
	assert.Zero(t, dup.Sign(), "units duplicated")

	// The up-down counter integrated: session-seconds for every customer.
	got := received(t, l, from, time.Now())
	for _, c := range []string{"customer-01", "customer-02", "customer-03"} {
		v := got[key(noExpectation, c, "")]
		if assert.NotNil(t, v, "no session-seconds for %s", c) {
			assert.Positive(t, v.Sign())
		}
	}
}

// TestPipelineThrottleStorm: CloudZero answers 429s (with and without
// Retry-After) and 503s, including some applied-but-answered-503 requests.
// Nothing may be lost; duplicates only come from the ambiguous ones.
func TestPipelineThrottleStorm(t *testing.T) {
	// flush_interval: 1s, so that the storm meets the sends of the run
	// (with the default 5m they would all happen at shutdown).
	p := newPipeline(t, "flush_interval: 1s")
	one := 1
	require.NoError(t, p.em.Server.SetFaults(emulator.FaultConfig{Repeat: true, Steps: []emulator.FaultStep{
		{Count: 3, Status: 429, RetryAfterSeconds: &one},
		{Count: 3, Status: 429},
		{Count: 4, Status: 503},
		{Count: 3}, // pass
	}}))
	p.startCollector()
	from := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	want := p.generate(ctx, 300, "200", "6s")
	// Wait until the storm has met the sends (both kinds of 429, then a
	// 503), then SIGTERM. Not until CloudZero holds everything: each failed
	// round grows the backoff towards max_interval (30s), so at 10 failures
	// in 13 requests the run alone takes minutes to deliver it; the shutdown
	// flush retries the rest every 250ms.
	require.Eventually(t, func() bool {
		l := p.em.Ledger()
		return l.RequestsByStatus["429"] >= 6 && l.RequestsByStatus["503"] >= 1
	}, 2*time.Minute, 100*time.Millisecond, "the storm met the sends")
	p.stopCollector(syscall.SIGTERM)
	l := p.em.Ledger()
	lost, dup := report(t, "429/503 storm", want, l, from)
	assert.Positive(t, l.RequestsByStatus["429"])
	assert.Positive(t, l.RequestsByStatus["503"])
	assert.Zero(t, lost.Sign(), "units lost")
	assert.Zero(t, dup.Sign(), "refused requests were not applied: no duplicates")

	// Ambiguous failures: applied, then answered 503. The retry applies
	// them again: the only duplicates, and the ledger counts them. Only
	// telemetrygen here, so that every request carries expected records
	// (the app's session-seconds integral has no exact expectation).
	p2 := newPipeline(t, "flush_interval: 1s")
	require.NoError(t, p2.em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{
		{Count: 2}, {Count: 2, Status: 503, Apply: true},
	}}))
	p2.startCollector()
	from = time.Now()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel2()
	want = p2.generate(ctx2, 100, "100", "")
	p2.waitForTotals(want, from, 2*time.Minute)
	p2.stopCollector(syscall.SIGTERM)
	l = p2.em.Ledger()
	lost, dup = report(t, "ambiguous 503s", want, l, from)
	assert.Zero(t, lost.Sign(), "units lost")
	assert.EqualValues(t, 2, l.AmbiguousAppliedRequests)
	ambiguous, ok := new(big.Rat).SetString(l.AmbiguousAppliedUnits)
	require.True(t, ok, l.AmbiguousAppliedUnits)
	assert.Positive(t, ambiguous.Sign())
	assert.Zero(t, dup.Cmp(ambiguous), "the only duplicates are the units of the re-sent ambiguous requests (%s, ledger %s)",
		dup.RatString(), ambiguous.RatString())
}

// TestPipelineSigkillRestart: persistent queue; the collector is killed with
// SIGKILL in the middle of the run and restarted on the same storage. The
// cumulative series (SDK app, telemetrygen cumulative sums) must lose no
// increment and count none twice.
func TestPipelineSigkillRestart(t *testing.T) {
	// storage: the test is about what survives a SIGKILL; flush_interval:
	// 1s, so that requests are being refused when the kill comes.
	p := newPipeline(t, "storage: file_storage", "flush_interval: 1s")
	p.startCollector()
	from := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	want := expectation{}
	var wg sync.WaitGroup
	var appErr, tgErr error
	var summary appSummary
	wg.Go(func() { summary, appErr = p.usageApp(ctx, "20s", 11) })
	const n = 400 // 20 s at 20/s
	wg.Go(func() {
		tgErr = p.telemetrygen(ctx, "--metric-type", "Sum", "--aggregation-temporality", "cumulative",
			"--otlp-metric-name", "tg.cum.sum", "--metrics", strconv.Itoa(n), "--rate", "20",
			"--telemetry-attributes", `customer.id="tg-a"`, "--telemetry-attributes", `feature="search"`,
			"--allow-export-failures")
	})

	time.Sleep(7 * time.Second)
	// Kill while CloudZero refuses everything, so no request is half-applied
	// at the moment of the kill: the batches waiting are on disk.
	require.NoError(t, p.em.Server.SetFaults(emulator.FaultConfig{Repeat: true, Steps: []emulator.FaultStep{{Count: 1, Status: 503}}}))
	refused := p.em.Ledger().RequestsByStatus["503"]
	require.Eventually(t, func() bool { return p.em.Ledger().RequestsByStatus["503"] > refused }, 10*time.Second, 50*time.Millisecond,
		"a batch must have been refused, so that records wait on disk at the kill")
	p.stopCollector(syscall.SIGKILL)
	time.Sleep(time.Second)
	p.startCollector()
	require.NoError(t, p.em.Server.SetFaults(emulator.FaultConfig{}))

	wg.Wait()
	require.NoError(t, appErr)
	require.NoError(t, tgErr)
	want.app(summary)
	want.add(key("tg-cum-sum", "tg-a", "search"), n-1)
	l := p.waitForTotals(want, from, 2*time.Minute)
	p.stopCollector(syscall.SIGTERM)
	l = p.em.Ledger()
	lost, dup := report(t, "SIGKILL and restart", want, l, from)
	assert.Zero(t, lost.Sign(), "units lost")
	assert.Zero(t, dup.Sign(), "units duplicated")
}
