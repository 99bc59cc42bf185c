package cloudzerometric

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.uber.org/goleak"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testKey = "czk_TEST-SECRET-0123456789abcdef"

// api is the local emulator behind an httptest server; down makes it answer
// 503 to every API request until the given time.
type api struct {
	em       *emulator.Server
	srv      *httptest.Server
	downTill atomic.Int64 // unix nanoseconds
	refused  atomic.Int64 // requests answered 503 by down
}

func newAPI(t *testing.T) *api {
	t.Helper()
	em, err := emulator.New(emulator.Config{APIKey: testKey})
	require.NoError(t, err)
	a := &api{em: em}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/unit-cost/") && time.Now().UnixNano() < a.downTill.Load() {
			a.refused.Add(1)
			http.Error(w, `{"message":"service unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		em.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { a.srv.Close(); em.Close() })
	return a
}

func (a *api) down(d time.Duration) { a.downTill.Store(time.Now().Add(d).UnixNano()) }

// totals: "stream|element|filter" -> exact total CloudZero holds, over buckets.
func (a *api) totals(t *testing.T) map[string]string {
	t.Helper()
	got := map[string]*big.Rat{}
	for _, s := range a.em.Ledger().Streams {
		for _, e := range s.Entries {
			v, ok := new(big.Rat).SetString(e.Value)
			require.True(t, ok, e.Value)
			k := key(s.Name, e.ElementName, e.Filter)
			if got[k] == nil {
				got[k] = new(big.Rat)
			}
			got[k].Add(got[k], v)
		}
	}
	out := map[string]string{}
	for k, v := range got {
		out[k] = v.RatString()
	}
	return out
}

func key(stream, element string, filter map[string][]string) string {
	if filter == nil {
		filter = map[string][]string{}
	}
	f, _ := json.Marshal(filter) // map keys sorted
	return stream + "|" + element + "|" + string(f)
}

// testConfig: the shipped defaults, the emulator's address and key, and one
// stream per instrument kind.
func testConfig(url string) *Config {
	cfg := NewConfig()
	cfg.ClientConfig.Endpoint = url
	cfg.APIKey = configopaque.String(testKey)
	feature := map[string]string{"custom:feature": "feature"}
	cfg.Streams = []StreamConfig{
		{Name: "requests", Metrics: []string{"t.requests"}, ElementName: "customer.id", Filter: feature},
		{Name: "sessions", Metrics: []string{"t.sessions"}, ElementName: "customer.id", Value: "sum"},
		{Name: "latency-count", Metrics: []string{"t.latency"}, ElementName: "customer.id", Filter: feature, Value: "count"},
		{Name: "latency-sum", Metrics: []string{"t.latency"}, ElementName: "customer.id", Filter: feature, Value: "sum"},
		{Name: "queue-depth", Metrics: []string{"t.queue"}, ElementName: "customer.id", Value: "sum"},
	}
	return cfg
}

// instruments are one of each kind the SDK has, recording into model the
// exact totals CloudZero must hold.
type instruments struct {
	requests metric.Int64Counter
	sessions metric.Int64UpDownCounter
	latency  metric.Float64Histogram
	queue    metric.Float64Gauge

	model map[string]*big.Rat
	level map[string]int64   // sessions per customer
	gauge map[string]float64 // last gauge value per customer
}

func newInstruments(t *testing.T, mp metric.MeterProvider) *instruments {
	m := mp.Meter("test")
	in := &instruments{model: map[string]*big.Rat{}, level: map[string]int64{}, gauge: map[string]float64{}}
	var err error
	in.requests, err = m.Int64Counter("t.requests")
	require.NoError(t, err)
	in.sessions, err = m.Int64UpDownCounter("t.sessions")
	require.NoError(t, err)
	in.latency, err = m.Float64Histogram("t.latency")
	require.NoError(t, err)
	in.queue, err = m.Float64Gauge("t.queue")
	require.NoError(t, err)
	return in
}

func (in *instruments) add(k string, v *big.Rat) {
	if in.model[k] == nil {
		in.model[k] = new(big.Rat)
	}
	in.model[k].Add(in.model[k], v)
}

func feat(f string) map[string][]string { return map[string][]string{"custom:feature": {f}} }

// round records some usage for customer c: n requests of feature f, each
// taking secs (exact in binary), a sessions change, a gauge sample.
func (in *instruments) round(ctx context.Context, c, f string, n int, secs float64, sessions int64, queue float64) {
	attrs := metric.WithAttributes(attribute.String("customer.id", c), attribute.String("feature", f))
	for range n {
		in.requests.Add(ctx, 1, attrs)
		in.latency.Record(ctx, secs, attrs)
	}
	in.add(key("requests", c, feat(f)), big.NewRat(int64(n), 1))
	in.add(key("latency-count", c, feat(f)), big.NewRat(int64(n), 1))
	in.add(key("latency-sum", c, feat(f)), new(big.Rat).Mul(big.NewRat(int64(n), 1), new(big.Rat).SetFloat64(secs)))
	cust := metric.WithAttributes(attribute.String("customer.id", c))
	in.sessions.Add(ctx, sessions, cust)
	in.level[c] += sessions
	in.queue.Record(ctx, queue, cust)
	in.gauge[c] = queue
}

// collected models one collection: the up-down counter and the gauge are
// cumulative with both selectors, so every collection samples each series
// at its level, or its last value.
func (in *instruments) collected() {
	for c, l := range in.level {
		in.add(key("sessions", c, nil), big.NewRat(l, 1))
	}
	for c, v := range in.gauge {
		in.add(key("queue-depth", c, nil), new(big.Rat).SetFloat64(v))
	}
}

func (in *instruments) want() map[string]string {
	out := map[string]string{}
	for k, v := range in.model {
		if v.Sign() != 0 {
			out[k] = v.RatString()
		}
	}
	return out
}

// TestExactTotalsThroughTheSDK: the SDK's counter, up-down counter,
// histogram and gauge, through a PeriodicReader whose collections are
// driven by ForceFlush, into the emulator: exact totals per (element,
// filter), with the default (delta) and with cumulative temporality.
func TestExactTotalsThroughTheSDK(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"delta (default)", nil},
		{"cumulative", []Option{WithTemporalitySelector(sdkmetric.DefaultTemporalitySelector)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAPI(t)
			ctx := context.Background()
			exp, err := New(ctx, testConfig(a.srv.URL), tc.opts...)
			require.NoError(t, err)
			for _, k := range []sdkmetric.InstrumentKind{sdkmetric.InstrumentKindUpDownCounter, sdkmetric.InstrumentKindGauge} {
				assert.Equal(t, metricdata.CumulativeTemporality, exp.Temporality(k), "%v", k)
			}
			mp := sdkmetric.NewMeterProvider(
				sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))),
				sdkmetric.WithResource(resource.NewSchemaless(attribute.String("service.name", "t"))))
			in := newInstruments(t, mp)

			in.round(ctx, "c1", "search", 7, 0.25, 3, 4.5)
			in.round(ctx, "c2", "export", 2, 1.5, 1, 2)
			require.NoError(t, mp.ForceFlush(ctx))
			in.collected()
			in.round(ctx, "c1", "search", 5, 0.125, -1, 1.25)
			in.round(ctx, "c1", "checkout", 3, 0.5, 2, 8)
			require.NoError(t, mp.ForceFlush(ctx))
			in.collected()
			in.round(ctx, "c2", "export", 11, 2, -1, 3.5)
			require.NoError(t, mp.ForceFlush(ctx))
			in.collected()
			assert.Equal(t, in.want(), a.totals(t), "after three ForceFlush")

			// Shutdown collects once more and sends it.
			in.round(ctx, "c3", "search", 1, 0.75, 4, 1)
			require.NoError(t, mp.Shutdown(ctx))
			in.collected()
			assert.Equal(t, in.want(), a.totals(t), "after Shutdown")
			assert.Zero(t, a.em.Ledger().RequestsByStatus["400"])
		})
	}
}

// manualRM is a ResourceMetrics as the SDK builds it, for tests that call
// Export directly.
func manualRM(customer string, value int64, at time.Time) *metricdata.ResourceMetrics {
	return &metricdata.ResourceMetrics{
		Resource: resource.NewSchemaless(attribute.String("service.name", "t")),
		ScopeMetrics: []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{{
			Name: "t.requests",
			Data: metricdata.Sum[int64]{Temporality: metricdata.DeltaTemporality, IsMonotonic: true, DataPoints: []metricdata.DataPoint[int64]{{
				Attributes: attribute.NewSet(attribute.String("customer.id", customer), attribute.String("feature", "search")),
				StartTime:  at.Add(-time.Second), Time: at, Value: value,
			}}},
		}}}},
	}
}

// TestExportKeepsNothingOfItsInput: the SDK reuses the ResourceMetrics
// after Export returns; changing it then must not change what is sent.
func TestExportKeepsNothingOfItsInput(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	exp, err := New(ctx, testConfig(a.srv.URL))
	require.NoError(t, err)
	defer exp.Shutdown(ctx)

	rm := manualRM("c1", 42, time.Now())
	require.NoError(t, exp.Export(ctx, rm))
	// What the SDK does when it reuses rm: new points, attributes and data in the same slices.
	dp := &rm.ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64]).DataPoints[0]
	dp.Value = 1000
	dp.Attributes = attribute.NewSet(attribute.String("customer.id", "intruder"), attribute.String("feature", "search"))
	rm.ScopeMetrics[0].Metrics[0].Name = "t.other"
	rm.ScopeMetrics = rm.ScopeMetrics[:0]

	require.NoError(t, exp.ForceFlush(ctx))
	assert.Equal(t, map[string]string{key("requests", "c1", feat("search")): "42"}, a.totals(t))
}

// TestShutdownDuring503LosesNothing: CloudZero answers 503 for the first
// 3 seconds of the shutdown; Shutdown retries (shutdown_timeout, default
// 20s) and everything arrives once.
func TestShutdownDuring503LosesNothing(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	exp, err := New(ctx, testConfig(a.srv.URL))
	require.NoError(t, err)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))))
	in := newInstruments(t, mp)
	for i := range 50 {
		in.round(ctx, fmt.Sprintf("c%d", i%7), []string{"search", "export"}[i%2], i%5+1, 0.5, 1, float64(i))
	}
	a.down(3 * time.Second)
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, mp.Shutdown(sctx))
	in.collected()
	took := time.Since(start)
	assert.GreaterOrEqual(t, took, 3*time.Second, "Shutdown returned before CloudZero was back")
	assert.Positive(t, a.refused.Load())
	assert.Equal(t, in.want(), a.totals(t))
	t.Logf("shutdown took %s, %d requests answered 503", took.Round(10*time.Millisecond), a.refused.Load())
}

// TestStorageDirKeepsWhatWasNotSent: delivery: replace with WithStorageDir;
// the first exporter stops while CloudZero is down (what it counted stays
// stored), the second sends it: exact totals, replace is idempotent.
func TestStorageDirKeepsWhatWasNotSent(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	dir := t.TempDir()
	cfg := testConfig(a.srv.URL)
	cfg.Delivery = "replace"
	cfg.ShutdownTimeout = time.Second // the setting under test: give up while CloudZero is down

	exp, err := New(ctx, cfg, WithStorageDir(dir))
	require.NoError(t, err)
	now := time.Now()
	require.NoError(t, exp.Export(ctx, manualRM("c1", 5, now)))
	require.NoError(t, exp.ForceFlush(ctx))
	require.NoError(t, exp.Export(ctx, manualRM("c1", 7, now.Add(time.Second))))
	a.down(time.Hour)
	require.EqualError(t, exp.Shutdown(ctx), "cloudzero: shutdown: 1 records (12 units) not confirmed by CloudZero: stored, sent at the next start")
	assert.Equal(t, map[string]string{key("requests", "c1", feat("search")): "5"}, a.totals(t))

	a.down(0)
	exp2, err := New(ctx, cfg, WithStorageDir(dir))
	require.NoError(t, err)
	require.NoError(t, exp2.Export(ctx, manualRM("c1", 1, now.Add(2*time.Second))))
	require.NoError(t, exp2.Shutdown(ctx))
	assert.Equal(t, map[string]string{key("requests", "c1", feat("search")): "13"}, a.totals(t))
	assert.Equal(t, int64(2), a.em.Ledger().RequestsByRoute[emulator.RouteReplace]["200"]+a.em.Ledger().RequestsByRoute[emulator.RouteSum]["200"])
}

// TestStorageDirInUse: a second exporter of the same name on the same
// directory cannot open the file the first holds; the error says which and
// why, and the first one goes on unharmed.
func TestStorageDirInUse(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	dir := t.TempDir()
	first, err := New(ctx, testConfig(a.srv.URL), WithStorageDir(dir))
	require.NoError(t, err)
	_, err = New(ctx, testConfig(a.srv.URL), WithStorageDir(dir))
	require.Error(t, err)
	assert.Contains(t, err.Error(), dir)
	assert.Contains(t, err.Error(), "in use by another exporter named \"cloudzero\"")
	require.NoError(t, first.Export(ctx, manualRM("c1", 2, time.Now())))
	require.NoError(t, first.Shutdown(ctx))
	assert.Equal(t, map[string]string{key("requests", "c1", feat("search")): "2"}, a.totals(t))
}

// TestConcurrentExportFlushShutdown: the three are safe to call at once;
// every Export that returned nil is in CloudZero exactly once.
func TestConcurrentExportFlushShutdown(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	exp, err := New(ctx, testConfig(a.srv.URL))
	require.NoError(t, err)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted = map[string]int64{}
	)
	base := time.Now()
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				c := fmt.Sprintf("c%d", g)
				err := exp.Export(ctx, manualRM(c, int64(i+1), base.Add(time.Duration(i)*time.Millisecond)))
				if err == nil {
					mu.Lock()
					accepted[key("requests", c, feat("search"))] += int64(i + 1)
					mu.Unlock()
				} else {
					assert.ErrorIs(t, err, sdkmetric.ErrExporterShutdown)
				}
				if i%50 == 0 {
					assert.NoError(t, exp.ForceFlush(ctx))
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	wg.Go(func() { assert.NoError(t, exp.Shutdown(ctx)) })
	wg.Wait()
	assert.NoError(t, exp.Shutdown(ctx), "a second Shutdown")
	assert.ErrorIs(t, exp.Export(ctx, manualRM("late", 1, time.Now())), sdkmetric.ErrExporterShutdown)
	want := map[string]string{}
	for k, v := range accepted {
		want[k] = fmt.Sprint(v)
	}
	assert.Equal(t, want, a.totals(t))
}

// TestExportGivesUpWithItsContext: usage that cannot be counted (max_keys
// reached) is retried until ctx ends, never longer, and the error says why.
func TestExportGivesUpWithItsContext(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	cfg := testConfig(a.srv.URL)
	cfg.MaxKeys = 1 // the setting under test: a second key does not fit
	exp, err := New(ctx, cfg)
	require.NoError(t, err)
	defer exp.Shutdown(ctx)
	now := time.Now()
	require.NoError(t, exp.Export(ctx, manualRM("c1", 1, now)))

	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = exp.Export(tctx, manualRM("c2", 1, now))
	took := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "max_keys")
	assert.Less(t, took, 2*time.Second)
	assert.GreaterOrEqual(t, took, 250*time.Millisecond, "it retried until the deadline")
}

// TestErrorsNeverShowTheKey: a wrong endpoint path and a refused key end in
// drops the error handler reports; neither they nor errors hold the key.
func TestErrorsNeverShowTheKey(t *testing.T) {
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

	// The server echoes the Authorization header back, as a badly behaved proxy might.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad key: "+r.Header.Get("Authorization"), http.StatusUnauthorized)
	}))
	defer srv.Close()
	ctx := context.Background()
	exp, err := New(ctx, testConfig(srv.URL))
	require.NoError(t, err)
	require.NoError(t, exp.Export(ctx, manualRM("c1", 3, time.Now())))
	require.NoError(t, exp.ForceFlush(ctx)) // 401: dropped, counted, logged
	require.NoError(t, exp.Shutdown(ctx))

	cfg := testConfig(srv.URL)
	cfg.Streams[0].ElementName = ""
	_, err = New(ctx, cfg)
	require.Error(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, seen, "the drop reached the error handler")
	for _, s := range append(slices.Clone(seen), err.Error()) {
		assert.NotContains(t, s, testKey)
	}
	assert.Contains(t, strings.Join(seen, "\n"), "401")
}

// TestOwnTelemetry: the exporter's counts go to the MeterProvider of
// WithMeterProvider, not to the one it exports.
func TestOwnTelemetry(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	own := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer own.Shutdown(ctx)
	exp, err := New(ctx, testConfig(a.srv.URL), WithMeterProvider(own))
	require.NoError(t, err)

	rm := manualRM("c1", 4, time.Now())
	noElement := manualRM("c2", 9, time.Now())
	dp := &noElement.ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64]).DataPoints[0]
	dp.Attributes = attribute.NewSet(attribute.String("feature", "search")) // no customer.id
	require.NoError(t, exp.Export(ctx, rm))
	require.NoError(t, exp.Export(ctx, noElement))
	require.NoError(t, exp.ForceFlush(ctx))
	require.NoError(t, exp.Shutdown(ctx))

	var got metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &got))
	counts := map[string]int64{}
	for _, sm := range got.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, p := range s.DataPoints {
					k := m.Name
					if r, ok := p.Attributes.Value("reason"); ok {
						k += "{" + r.AsString() + "}"
					}
					counts[k] += p.Value
				}
			}
		}
	}
	assert.Equal(t, int64(2), counts["otelcol_exporter_cloudzero_datapoints_received"])
	assert.Equal(t, int64(1), counts["otelcol_exporter_cloudzero_datapoints_dropped{missing_element}"])
	assert.Equal(t, int64(1), counts["otelcol_exporter_cloudzero_records_sent"])
}
