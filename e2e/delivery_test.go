//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/loadgen"
)

// The delivery core's guarantees on the built collector, each with the
// exporter's shipped defaults except the settings a test names.

// TestStormThenSigterm: CloudZero answers a burst of 503, 429 and 502 and
// the collector is stopped (SIGTERM) right after the load. Shipped
// defaults only: no storage, flush_interval 5m, so everything is sent by
// the shutdown flush, retrying through the storm within shutdown_timeout.
// (The exporterhelper-queue design lost all 50,701 units of this run.)
func TestStormThenSigterm(t *testing.T) {
	p := newPipeline(t)
	require.NoError(t, p.em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{
		{Count: 12, Status: 503}, {Count: 4, Status: 429}, {Count: 3, Status: 502},
	}}))
	p.startCollector()
	from := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	want := p.generate(ctx, 320, "20", "16s") // 16 s of load
	p.stopCollector(syscall.SIGTERM)
	l := p.em.Ledger()
	lost, dup := report(t, "storm then SIGTERM", want, l, from)
	assert.Zero(t, lost.Sign(), "units lost")
	assert.Zero(t, dup.Sign(), "units duplicated")
	assert.EqualValues(t, map[string]int64{"503": 12, "429": 4, "502": 3}, l.InjectedFaults, "the whole storm was met")
}

// TestReplaceAmbiguous503: with delivery: replace (and storage:
// file_storage, which replace requires), requests CloudZero applied but
// answered with 503 are sent again with the same totals: nothing counts
// twice. flush_interval: 1s, so that sends happen while the faults last.
func TestReplaceAmbiguous503(t *testing.T) {
	p := newPipeline(t, "delivery: replace", "storage: file_storage", "flush_interval: 1s")
	require.NoError(t, p.em.Server.SetFaults(emulator.FaultConfig{Repeat: true, Steps: []emulator.FaultStep{
		{Count: 2}, {Count: 1, Status: 503, Apply: true}, {Count: 1, Status: 503},
	}}))
	p.startCollector()
	from := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	want := p.generate(ctx, 200, "20", "") // 10 s of telemetrygen
	p.waitForTotals(want, from, 2*time.Minute)
	p.stopCollector(syscall.SIGTERM)
	l := p.em.Ledger()
	lost, dup := report(t, "replace, ambiguous 503s", want, l, from)
	assert.Positive(t, l.AmbiguousAppliedRequests, "requests were applied and answered 503")
	assert.Zero(t, lost.Sign(), "units lost")
	assert.Zero(t, dup.Sign(), "units duplicated")
}

// TestReplaceFiveSigkills: delivery: replace on file_storage (required),
// flush_interval: 1s so that requests are under way at the kills; five
// SIGKILLs at random instants while CloudZero answers plain and
// applied-then-503 faults, each followed by a restart on the same storage.
// Nothing may be lost or counted twice.
//
// The input is cumulative (the SDK app, telemetrygen cumulative sums): OTLP
// delta input is at-least-once at the client, since an export the
// collector committed but could not answer before the kill is sent again
// by the client and counted twice before it reaches any exporter;
// cumulative input is idempotent (the re-sent point is out of order).
func TestReplaceFiveSigkills(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	p := newPipeline(t, "delivery: replace", "storage: file_storage", "flush_interval: 1s")
	require.NoError(t, p.em.Server.SetFaults(emulator.FaultConfig{Repeat: true, Steps: []emulator.FaultStep{
		{Count: 3}, {Count: 1, Status: 503}, {Count: 2}, {Count: 1, Status: 503, Apply: true},
	}}))
	p.startCollector()
	from := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	const n = 1000 // 50 s at 20/s
	var wg sync.WaitGroup
	var summary appSummary
	errs := make([]error, 3)
	wg.Go(func() { summary, errs[0] = p.usageApp(ctx, "50s", 13) })
	for i, c := range []string{"tg-a", "tg-b"} {
		wg.Go(func() {
			errs[1+i] = p.telemetrygen(ctx, "--metric-type", "Sum", "--aggregation-temporality", "cumulative",
				"--otlp-metric-name", "tg.cum.sum", "--metrics", strconv.Itoa(n), "--rate", "20",
				"--telemetry-attributes", `customer.id="`+c+`"`, "--telemetry-attributes", `feature="search"`,
				"--allow-export-failures")
		})
	}
	// Five instants in [5 s, 38 s], at least 4 s apart: the collector is up
	// again well before the load ends and sends its last cumulative values.
	var kills []time.Duration
	for len(kills) < 5 {
		k := 5*time.Second + time.Duration(rng.Int64N(int64(33*time.Second)))
		if !slices.ContainsFunc(kills, func(o time.Duration) bool { return (k - o).Abs() < 4*time.Second }) {
			kills = append(kills, k)
		}
	}
	slices.Sort(kills)
	t.Logf("SIGKILL at %v", kills)
	for _, k := range kills {
		time.Sleep(time.Until(from.Add(k)))
		p.stopCollector(syscall.SIGKILL)
		p.startCollector()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, p.em.Server.SetFaults(emulator.FaultConfig{}))
	want := expectation{}
	want.app(summary)
	for _, c := range []string{"tg-a", "tg-b"} {
		want.add(key("tg-cum-sum", c, "search"), n-1)
	}
	p.waitForTotals(want, from, 2*time.Minute)
	p.stopCollector(syscall.SIGTERM)
	l := p.em.Ledger()
	lost, dup := report(t, "replace, five SIGKILLs", want, l, from)
	assert.Positive(t, l.AmbiguousAppliedRequests)
	assert.Zero(t, lost.Sign(), "units lost")
	assert.Zero(t, dup.Sign(), "units duplicated")
}

// TestTwoMillionDeltaPoints: 2,000,000 delta points in 5,000 keys (1,000
// customers × 5 features) sent at full speed, shipped defaults only. The
// exporterhelper-queue design refused exports after 200,000 records; the
// ledger holds 5,000 keys and accepts them all.
func TestTwoMillionDeltaPoints(t *testing.T) {
	p := newPipeline(t)
	p.startCollector()
	from := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := loadgen.Run(ctx, loadgen.Config{Endpoint: fmt.Sprintf("127.0.0.1:%d", p.grpc), Metric: "lg.requests",
		Customers: 1000, Features: 5, Points: 2_000_000, PointsPerRequest: 1000, Workers: 2})
	require.NoError(t, err)
	t.Logf("sent %d points in %s (%.0f points/s), %d requests, %d refused", res.Points, res.Elapsed.Round(time.Millisecond),
		float64(res.Points)/res.Elapsed.Seconds(), res.Requests, res.Refused)
	assert.Zero(t, res.Refused, "no export refused")
	p.stopCollector(syscall.SIGTERM)

	want := expectation{}
	for k, v := range res.Totals {
		want.add(key("lg-requests", k.Customer, k.Feature), v)
	}
	l := p.em.Ledger()
	got := received(t, l, from, time.Now())
	lost, dup, _ := compare(want, got)
	t.Logf("2,000,000 delta points: %d keys sent, %d received; lost %s, duplicated %s; requests by status %v",
		len(want), len(got), lost.RatString(), dup.RatString(), l.RequestsByStatus)
	assert.Len(t, got, len(want))
	assert.Zero(t, lost.Sign(), "units lost")
	assert.Zero(t, dup.Sign(), "units duplicated")
}
