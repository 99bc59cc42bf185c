package cloudzerometric

// Regression tests: each failed before its fix (a hostile review of the
// SDK exporter). Their comments describe the bug as it was.

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestCumulativeLateSeriesCountsInFull: with cumulative temporality
// the SDK stamps every point of a counter with the *instrument's* start time
// (sdk/metric internal/aggregate/sum.go: cumulativeSum.start = now() at
// creation), not the time the attribute set was first recorded. The
// translator counts a first point in full only if its start time is less
// than series.ttl - max_future_skew ago (translator/process.go:410), so a
// customer whose first request comes more than ttl-skew after the counter was
// created (55 minutes with the defaults) has its first interval's usage
// taken as a baseline: lost. Here ttl is shortened to 2s (skew 0) so the
// test does not wait an hour. Every series of the in-process SDK started
// after the exporter did, so every first point should count in full.
// Expected: 5+3 = 8 requests in CloudZero; actual: 3.
func TestCumulativeLateSeriesCountsInFull(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	cfg := testConfig(a.srv.URL)
	cfg.Series.TTL = 2 * time.Second
	cfg.MaxFutureSkew = 0
	exp, err := New(ctx, cfg, WithTemporalitySelector(sdkmetric.DefaultTemporalitySelector))
	require.NoError(t, err)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))))
	requests, err := mp.Meter("test").Int64Counter("t.requests")
	require.NoError(t, err)
	attrs := metric.WithAttributes(attribute.String("customer.id", "late"), attribute.String("feature", "search"))

	time.Sleep(2200 * time.Millisecond) // the app has run longer than series.ttl: a new customer arrives
	requests.Add(ctx, 5, attrs)
	require.NoError(t, mp.ForceFlush(ctx))
	requests.Add(ctx, 3, attrs)
	require.NoError(t, mp.Shutdown(ctx))
	assert.Equal(t, map[string]string{key("requests", "late", feat("search")): "8"}, a.totals(t),
		"the first 5 requests of a customer first seen after series.ttl were taken as a baseline and never billed")
}

// TestConcurrentShutdownHonoursItsContext: sdkmetric.Exporter's
// Shutdown must honour its context. A second Shutdown while the first is
// still draining (CloudZero down, shutdown_timeout 3s) blocks in sync.Once
// (cloudzerometric/exporter.go:259 e.once.Do) until the first one ends,
// whatever its own deadline. Expected: return by ~200ms (its deadline);
// actual: ~3s.
func TestConcurrentShutdownHonoursItsContext(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	cfg := testConfig(a.srv.URL)
	cfg.ShutdownTimeout = 3 * time.Second
	exp, err := New(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, exp.Export(ctx, manualRM("c1", 1, time.Now())))
	a.down(time.Hour)

	first := make(chan struct{})
	go func() { defer close(first); _ = exp.Shutdown(ctx) }()
	time.Sleep(100 * time.Millisecond) // the first Shutdown is retrying against 503s

	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = exp.Shutdown(sctx)
	took := time.Since(start)
	<-first // bounded by shutdown_timeout
	assert.Less(t, took, time.Second, "Shutdown with a 200ms context took %s", took)
}

// TestWithNameTellsTelemetryApart: WithName's doc says the name "is the
// exporter attribute of its telemetry", and the README tells a process to run
// several exporters. In-process, nothing adds that attribute: the collector
// adds otelcol.component.id through its own MeterProvider wrapper, while
// settings() (cloudzerometric/exporter.go:171-176) passes the user's provider
// as is and puts the id only on the logger. Two exporters on one provider
// therefore share every instrument (same scope, same names, no attribute):
// their counts are summed, their gauges overwrite each other.
// Expected: datapoints_received has one point per exporter; actual: one point
// with no attribute, the sum of both.
func TestWithNameTellsTelemetryApart(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	own := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer own.Shutdown(ctx)
	ea, err := New(ctx, testConfig(a.srv.URL), WithName("a"), WithMeterProvider(own))
	require.NoError(t, err)
	eb, err := New(ctx, testConfig(a.srv.URL), WithName("b"), WithMeterProvider(own))
	require.NoError(t, err)
	require.NoError(t, ea.Export(ctx, manualRM("c1", 1, time.Now())))
	require.NoError(t, eb.Export(ctx, manualRM("c2", 1, time.Now())))
	require.NoError(t, eb.Export(ctx, manualRM("c3", 1, time.Now())))

	var got metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &got))
	require.NoError(t, ea.Shutdown(ctx))
	require.NoError(t, eb.Shutdown(ctx))
	var points []string
	for _, sm := range got.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "otelcol_exporter_cloudzero_datapoints_received" {
				for _, p := range s.DataPoints {
					points = append(points, p.Attributes.Encoded(attribute.DefaultEncoder()))
				}
			}
		}
	}
	assert.Len(t, points, 2, "one datapoints_received series per exporter; got attribute sets %q", points)
}

// TestDefaultLoggerReportsPointDrops: doc.go says "Send failures and
// drops are logged (by default to otel.Handle)", and WithLogger "a drop ...
// goes to otel.Handle". Data points the translator drops (here
// missing_element: the app forgot customer.id) are only counted in
// datapoints_dropped (exporter.go:265) and never logged; with the default
// (noop) MeterProvider they are lost without a trace: billing usage vanishes
// and the app is never told. Expected: an otel.Handle error naming the
// reason; actual: nothing.
func TestDefaultLoggerReportsPointDrops(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		mu.Lock()
		seen = append(seen, err.Error())
		mu.Unlock()
	}))
	defer otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))

	a := newAPI(t)
	ctx := context.Background()
	exp, err := New(ctx, testConfig(a.srv.URL))
	require.NoError(t, err)
	rm := manualRM("c1", 9, time.Now())
	dp := &rm.ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64]).DataPoints[0]
	dp.Attributes = attribute.NewSet(attribute.String("feature", "search")) // no customer.id
	require.NoError(t, exp.Export(ctx, rm))
	require.NoError(t, exp.ForceFlush(ctx))
	require.NoError(t, exp.Shutdown(ctx))
	assert.Empty(t, a.totals(t))
	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, strings.Join(seen, "\n"), "missing_element", "a dropped point reached the error handler")
}

// TestRefusedCountedOncePerExport: Export retries a refused Consume
// itself (cloudzerometric/exporter.go:205-222), and every try goes through
// push, which adds the whole export to datapoints_refused again
// (exporter.go:256). In the collector the OTLP client's retry is a new
// delivery; here the app exported one point once, and once Export gives up
// nobody retries it: that point is lost. The counter then says ~6 points
// were refused for 1 point lost, so "every dropped point counted" cannot be
// read from the exporter's telemetry. Expected: refused{max_keys} = 1;
// actual: one per internal retry.
func TestRefusedCountedOncePerExport(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	own := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer own.Shutdown(ctx)
	cfg := testConfig(a.srv.URL)
	cfg.MaxKeys = 1
	exp, err := New(ctx, cfg, WithMeterProvider(own))
	require.NoError(t, err)
	now := time.Now()
	require.NoError(t, exp.Export(ctx, manualRM("c1", 1, now)))
	tctx, cancel := context.WithTimeout(ctx, 400*time.Millisecond)
	defer cancel()
	require.Error(t, exp.Export(tctx, manualRM("c2", 1, now)))

	var got metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &got))
	require.NoError(t, exp.Shutdown(ctx))
	refused := int64(0)
	for _, sm := range got.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "otelcol_exporter_cloudzero_datapoints_refused" {
				for _, p := range s.DataPoints {
					refused += p.Value
				}
			}
		}
	}
	assert.Equal(t, int64(1), refused, "one data point was exported once and lost once")
}

// TestShutdownLeavesNoGoroutines: after Shutdown returns, the exporter
// keeps the HTTP client's keep-alive connections open (nothing calls
// CloseIdleConnections; confighttp's IdleConnTimeout is 90s), so their
// net/http.(*persistConn) goroutines outlive it: an app's goleak check, or a
// process that creates and shuts down exporters, sees them leak. Expected:
// none left after Shutdown; actual: readLoop/writeLoop goroutines remain for
// as long as the server keeps the connection.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	exp, err := New(ctx, testConfig(a.srv.URL))
	require.NoError(t, err)
	require.NoError(t, exp.Export(ctx, manualRM("c1", 1, time.Now())))
	require.NoError(t, exp.ForceFlush(ctx))
	require.NoError(t, exp.Shutdown(ctx))

	var stacks string
	deadline := time.Now().Add(time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "net/http.(*persistConn)") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	assert.False(t, strings.Contains(stacks, "net/http.(*persistConn)"),
		"%d client connection goroutines still running 1s after Shutdown", strings.Count(stacks, "net/http.(*persistConn)."))
}

// TestForceFlushDuringFailedShutdownReportsFailure: a ForceFlush that
// is retrying (CloudZero down) when Shutdown begins gets the shutdown's
// outcome, errors.Join(ErrStopped, err) (exporter/flusher.go:74-77), and
// ForceFlush turns anything that Is ErrStopped into nil
// (cloudzerometric/exporter.go:236-238). So ForceFlush reports success
// although nothing was sent and, without storage, the usage is now lost.
// Expected: ForceFlush returns an error; actual: nil.
func TestForceFlushDuringFailedShutdownReportsFailure(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	cfg := testConfig(a.srv.URL)
	cfg.ShutdownTimeout = time.Second
	exp, err := New(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, exp.Export(ctx, manualRM("c1", 1, time.Now())))
	a.down(time.Hour)

	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	flushed := make(chan error, 1)
	go func() { flushed <- exp.ForceFlush(fctx) }()
	time.Sleep(200 * time.Millisecond) // ForceFlush is retrying against 503s
	require.Error(t, exp.Shutdown(ctx), "the record was not sent")
	select {
	case err := <-flushed:
		assert.Error(t, err, "ForceFlush said its data was sent; it was lost")
	case <-time.After(5 * time.Second):
		t.Fatal("ForceFlush did not return")
	}
	assert.Empty(t, a.totals(t))
}
