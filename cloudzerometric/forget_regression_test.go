package cloudzerometric

// Regression tests from a second hostile review: a series counted, forgotten
// and back with the same start must not count in full again. Their comments
// describe the bug as it was.

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
)

// cumRM is one cumulative monotonic point of t.requests for customer, as
// the SDK's cumulative counter builds it (the instrument's start time).
func cumRM(customer string, start, at time.Time, value int64) *metricdata.ResourceMetrics {
	return &metricdata.ResourceMetrics{
		Resource: resource.NewSchemaless(attribute.String("service.name", "t")),
		ScopeMetrics: []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{{
			Name: "t.requests",
			Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true, DataPoints: []metricdata.DataPoint[int64]{{
				Attributes: attribute.NewSet(attribute.String("customer.id", customer), attribute.String("feature", "search")),
				StartTime:  start, Time: at, Value: value,
			}}},
		}}}},
	}
}

// TestStoredSeriesForgottenThenBackCountsTwice: end to end, with
// WithStorageDir. The translator's lastForget (translator/process.go,
// countsFromStart: `start > t.lastForget+t.skew`) is not persisted, so
// after a restart it is 0 while the stored first start (SetStartTime in
// exporter/persist.go) is old.
//
//  1. run 1: customer c1's cumulative counter (started after the exporter's
//     first start) is first seen at 5: counted in full, 5 sent. c2 keeps
//     the process alive for longer than series.ttl (200ms).
//  2. run 2: the first call sweeps c1 (its TTL counts run time: ShiftSeen);
//     the tombstone is journaled.
//  3. run 3: c1 comes back, same start time, cumulative 6.
//
// Expected: c1 only sets a baseline in run 3 (it is the series tracked and
// forgotten; the same process without a restart does that), CloudZero
// holds 5 for c1. Actual: 6 more are counted in full, CloudZero holds 11:
// the 5 units of run 1 are billed twice.
func TestStoredSeriesForgottenThenBackCountsTwice(t *testing.T) {
	a := newAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	cfg := testConfig(a.srv.URL)
	cfg.Series.TTL = 200 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second

	// Run 1.
	exp, err := New(ctx, cfg, WithStorageDir(dir))
	require.NoError(t, err)
	start := time.Now() // the counter's start: after the exporter's first start
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, exp.Export(ctx, cumRM("c1", start, time.Now(), 5)))
	require.NoError(t, exp.Export(ctx, cumRM("c2", start, time.Now(), 1)))
	time.Sleep(300 * time.Millisecond) // c1 quiet for longer than the TTL, while the exporter runs
	require.NoError(t, exp.Export(ctx, cumRM("c2", start, time.Now(), 2)))
	require.NoError(t, exp.Shutdown(ctx))
	require.Equal(t, "5", a.totals(t)[key("requests", "c1", feat("search"))])

	// Run 2: its first call sweeps c1.
	exp, err = New(ctx, cfg, WithStorageDir(dir))
	require.NoError(t, err)
	require.NoError(t, exp.Export(ctx, cumRM("c2", start, time.Now(), 3)))
	require.NoError(t, exp.Shutdown(ctx))

	// Run 3: c1 is back with the same start.
	exp, err = New(ctx, cfg, WithStorageDir(dir))
	require.NoError(t, err)
	require.NoError(t, exp.Export(ctx, cumRM("c1", start, time.Now(), 6)))
	require.NoError(t, exp.Shutdown(ctx))

	got := a.totals(t)
	assert.Equal(t, "5", got[key("requests", "c1", feat("search"))], "c1's first 5 units billed twice")
}
