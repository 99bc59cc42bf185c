package cloudzeroexporter

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/metadata"
)

const testAPIKey = "test-api-key-do-not-log"

// hour is a fixed, recent UTC hour: points in it are neither too old nor in
// the future, and their bucket is known.
var hour = time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)

func startEmulator(t *testing.T) *emulator.Instance {
	t.Helper()
	in, err := emulator.Start("127.0.0.1:0", emulator.Config{APIKey: testAPIKey})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, in.Shutdown(ctx))
	})
	return in
}

// testConfig returns a valid config sending to endpoint, with one stream fed
// by "requests" (element customer.id, filter custom:feature), flushed every
// second and short retries: for the tests that watch sends while the
// exporter runs. The tests about defaults use defaultConfig.
func testConfig(endpoint string) *Config {
	cfg := defaultConfig(endpoint)
	cfg.ClientConfig.Timeout = 5 * time.Second
	cfg.FlushInterval = time.Second
	cfg.BackOffConfig.InitialInterval = 10 * time.Millisecond
	cfg.BackOffConfig.MaxInterval = 50 * time.Millisecond
	cfg.BackOffConfig.RandomizationFactor = 0
	return cfg
}

var fileStorageID = component.NewID(component.MustNewType("file_storage"))

// fileStorageHost starts a file_storage extension on dir and returns a host
// offering it (as fileStorageID), and its stop function.
func fileStorageHost(t *testing.T, dir string) (component.Host, func()) {
	t.Helper()
	fcfg := filestorage.NewFactory().CreateDefaultConfig().(*filestorage.Config)
	fcfg.Directory = dir
	ext, err := filestorage.NewFactory().Create(context.Background(), extensiontest.NewNopSettings(fileStorageID.Type()), fcfg)
	require.NoError(t, err)
	require.NoError(t, ext.Start(context.Background(), componenttest.NewNopHost()))
	return testHost{Host: componenttest.NewNopHost(), ext: map[component.ID]component.Component{fileStorageID: ext}},
		func() { require.NoError(t, ext.Shutdown(context.Background())) }
}

type testHost struct {
	component.Host
	ext map[component.ID]component.Component
}

func (h testHost) GetExtensions() map[component.ID]component.Component { return h.ext }

// newTestExporter creates and starts the exporter with a fixed component ID
// (the persistent queue's file is named after it).
func newTestExporter(t *testing.T, cfg *Config, host component.Host) exporter.Metrics {
	t.Helper()
	require.NoError(t, cfg.Validate())
	set := exportertest.NewNopSettings(metadata.Type)
	set.ID = component.NewIDWithName(metadata.Type, "test")
	exp, err := NewFactory().CreateMetrics(context.Background(), set, cfg)
	require.NoError(t, err)
	if host == nil {
		host = componenttest.NewNopHost()
	}
	require.NoError(t, exp.Start(context.Background(), host))
	return exp
}

func shutdown(t *testing.T, exp exporter.Metrics) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, exp.Shutdown(ctx))
}

// deltaSums builds n points of the delta sum "requests", one per customer,
// customer i using i+1 units of feature "billing".
func deltaSums(n int, at time.Time) pmetric.Metrics {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("requests")
	sum := m.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	for i := range n {
		dp := sum.DataPoints().AppendEmpty()
		dp.SetStartTimestamp(pcommon.NewTimestampFromTime(at.Add(-time.Second)))
		dp.SetTimestamp(pcommon.NewTimestampFromTime(at))
		dp.SetIntValue(int64(i + 1))
		dp.Attributes().PutStr("customer.id", "customer-"+string(rune('a'+i%26))+strings.Repeat("x", i/26))
		dp.Attributes().PutStr("feature", "billing")
	}
	return md
}

// cumulativeSum builds one point of the cumulative sum "requests" for
// customer c, started at start.
func cumulativeSum(c string, start, at time.Time, v float64) pmetric.Metrics {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("requests")
	sum := m.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	dp := sum.DataPoints().AppendEmpty()
	dp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	dp.SetTimestamp(pcommon.NewTimestampFromTime(at))
	dp.SetDoubleValue(v)
	dp.Attributes().PutStr("customer.id", c)
	dp.Attributes().PutStr("feature", "billing")
	return md
}

// streamTotal returns the exact total CloudZero holds for a stream.
func streamTotal(l emulator.Ledger, stream string) string {
	for _, s := range l.Streams {
		if s.Name == stream {
			return s.Total
		}
	}
	return "0"
}

func TestSendsAggregatedRecords(t *testing.T) {
	em := startEmulator(t)
	exp := newTestExporter(t, testConfig(em.URL), nil)
	for range 3 { // three export cycles of the same keys merge while they wait
		require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(30, hour.Add(10*time.Minute))))
	}
	shutdown(t, exp)

	l := em.Ledger()
	assert.Equal(t, "1395", streamTotal(l, "requests"), "3 x (1+...+30)")
	assert.Equal(t, map[string]int64{"200": l.RequestsByStatus["200"]}, l.RequestsByStatus, "only 200s")
	assert.Zero(t, l.UnalignedRecords)
	require.Len(t, l.Streams, 1)
	for _, e := range l.Streams[0].Entries {
		assert.Equal(t, hour.Format(time.RFC3339), e.Timestamp)
		assert.Equal(t, map[string][]string{"custom:feature": {"billing"}}, e.Filter)
	}
}

func TestServiceUnavailableStormSendsEachRecordOnce(t *testing.T) {
	em := startEmulator(t)
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 20, Status: 503}}}))
	exp := newTestExporter(t, testConfig(em.URL), nil)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(10, hour)))
	require.Eventually(t, func() bool { return streamTotal(em.Ledger(), "requests") == "55" }, 30*time.Second, 20*time.Millisecond)
	shutdown(t, exp)

	l := em.Ledger()
	assert.Equal(t, "55", streamTotal(l, "requests"))
	assert.EqualValues(t, 20, l.RequestsByStatus["503"])
	assert.EqualValues(t, 10, l.RecordsAccepted, "each record accepted exactly once")
}

func TestTooManyRequestsHonoursRetryAfter(t *testing.T) {
	em := startEmulator(t)
	two := 2
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1, Status: 429, RetryAfterSeconds: &two}}}))
	exp := newTestExporter(t, testConfig(em.URL), nil)
	start := time.Now()
	require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(3, hour)))
	require.Eventually(t, func() bool { return streamTotal(em.Ledger(), "requests") == "6" }, 30*time.Second, 20*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(start), 2*time.Second, "the retry waited for Retry-After")
	shutdown(t, exp)
}

func TestPermanentErrorDropsWithoutRetry(t *testing.T) {
	em := startEmulator(t)
	cfg := testConfig(em.URL)
	cfg.APIKey = "wrong-key"
	exp := newTestExporter(t, cfg, nil)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(3, hour)))
	require.Eventually(t, func() bool { return em.Ledger().RequestsByStatus["403"] == 1 }, 10*time.Second, 20*time.Millisecond)
	shutdown(t, exp)
	assert.EqualValues(t, 1, em.Ledger().RequestsByStatus["403"], "a 403 is not retried")
}

func TestDryRunWritesBodiesAndSendsNothing(t *testing.T) {
	em := startEmulator(t)
	cfg := testConfig(em.URL)
	cfg.DryRun = true
	cfg.DryRunFile = filepath.Join(t.TempDir(), "requests.jsonl")
	exp := newTestExporter(t, cfg, nil)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(2, hour)))
	shutdown(t, exp)

	assert.Zero(t, em.Ledger().RecordsAccepted)
	b, err := os.ReadFile(cfg.DryRunFile)
	require.NoError(t, err)
	parts := strings.SplitN(strings.TrimSpace(string(b)), " ", 3)
	require.Len(t, parts, 3)
	stream, op, body := parts[0], parts[1], parts[2]
	assert.Equal(t, "requests", stream)
	assert.Equal(t, "sum", op)
	var req struct {
		Records []map[string]any `json:"records"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &req))
	assert.Len(t, req.Records, 2)
}

// TestLedgerFullKeepsCumulativeState: when the ledger refuses usage that
// needs new keys (max_keys), nothing of the export is counted and the
// translator's state does not advance, so the next point counts it once;
// existing keys keep accepting.
func TestLedgerFullKeepsCumulativeState(t *testing.T) {
	em := startEmulator(t)
	cfg := testConfig(em.URL)
	cfg.MaxKeys = 1
	exp := newTestExporter(t, cfg, nil)
	ctx := context.Background()
	start := time.Now().Add(-time.Hour) // before the exporter started: the first point is a baseline
	at := time.Now().Add(-time.Minute)
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at, 100)))
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(time.Second), 110)), "one key: fits")
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("b", start, at, 50)), "a baseline makes no record, so needs no key")
	err := exp.ConsumeMetrics(ctx, cumulativeSum("b", start, at.Add(time.Second), 57))
	require.ErrorIs(t, err, czexporter.ErrLedgerFull)
	assert.False(t, consumererror.IsPermanent(err), "the sender retries")
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(2*time.Second), 115)), "existing keys keep accepting")
	// Once a's key is sent and its bucket... still open: a's key stays.
	// Raise the bound by restarting with a larger max_keys is not needed:
	// b's next point after the refusal counts what the refused one held.
	shutdown(t, exp)
	assert.Equal(t, "15", streamTotal(em.Ledger(), "requests"), "a: 100 -> 115")

	cfg.MaxKeys = 10
	exp = newTestExporter(t, cfg, nil)
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("b", start, at, 50)))
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("b", start, at.Add(time.Second), 57)))
	shutdown(t, exp)
	assert.Equal(t, "22", streamTotal(em.Ledger(), "requests"), "b: +7")
}

// TestLedgerFullRollsBackSeriesState: the refused export's cumulative delta
// is counted by the series' next point, not lost.
func TestLedgerFullRollsBackSeriesState(t *testing.T) {
	em := startEmulator(t)
	cfg := testConfig(em.URL)
	cfg.MaxKeys = 1
	exp := newTestExporter(t, cfg, nil)
	ctx := context.Background()
	start, at := time.Now().Add(-time.Hour), time.Now().Add(-10*time.Minute)
	require.NoError(t, exp.ConsumeMetrics(ctx, deltaSums(1, at)))                  // customer-a: its key fills the ledger
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("b", start, at, 10))) // baseline
	require.ErrorIs(t, exp.ConsumeMetrics(ctx, cumulativeSum("b", start, at.Add(time.Second), 20)), czexporter.ErrLedgerFull)
	// customer-a's bucket is still open: its key stays. Only after sending
	// and the bucket closing is it freed; here, shutting down and starting
	// again (memory only) empties the ledger.
	shutdown(t, exp)
	exp = newTestExporter(t, cfg, nil)
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("b", start, at, 10)))
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("b", start, at.Add(2*time.Second), 25)))
	shutdown(t, exp)
	assert.Equal(t, "16", streamTotal(em.Ledger(), "requests"), "1 (delta) + 15 (cumulative 10 -> 25)")
}

// TestStorageKeepsLedgerAndStateAcrossRestart: records refused by the server
// stay in the stored ledger; series state is restored, so a cumulative
// series fed across the restart loses no increment and counts none twice.
func TestStorageKeepsLedgerAndStateAcrossRestart(t *testing.T) {
	em := startEmulator(t)
	dir := t.TempDir()
	cfg := testConfig(em.URL)
	cfg.Storage = &fileStorageID
	cfg.ShutdownTimeout = time.Second

	// First run: the server refuses everything.
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1, Status: 503}}, Repeat: true}))
	host, stopExt := fileStorageHost(t, dir)
	exp := newTestExporter(t, cfg, host)
	start := time.Now().Add(-time.Hour)
	at := time.Now().Add(-time.Minute)
	ctx := context.Background()
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at, 1000)))                  // baseline
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(time.Second), 1007))) // +7
	require.NoError(t, exp.ConsumeMetrics(ctx, deltaSums(4, hour)))                                   // +10
	require.Eventually(t, func() bool { return em.Ledger().RequestsByStatus["503"] >= 1 }, 10*time.Second, 10*time.Millisecond)
	shutdown(t, exp)
	stopExt()
	assert.Zero(t, em.Ledger().RecordsAccepted)

	// Second run on the same directory, server healthy.
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{}))
	host, stopExt = fileStorageHost(t, dir)
	exp = newTestExporter(t, cfg, host)
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(2*time.Second), 1010))) // +3 from the restored 1007
	require.Eventually(t, func() bool { return streamTotal(em.Ledger(), "requests") == "20" }, 30*time.Second, 20*time.Millisecond)
	shutdown(t, exp)
	stopExt()
	assert.Equal(t, "20", streamTotal(em.Ledger(), "requests"), "7 + 3 cumulative + 10 delta, each once")
}

// ConsumeMetrics never sends: a 400 on one stream's request cannot make the
// OTLP client resend an export whose other part was counted.
func TestRefusalOfOneStreamCountsTheOtherOnce(t *testing.T) {
	em := startEmulator(t)
	cfg := testConfig(em.URL)
	cfg.Streams = append(cfg.Streams, StreamConfig{Name: "requests2", Metrics: []string{"requests"},
		ElementName: "customer.id", Filter: map[string]string{"custom:feature": "feature"}})
	exp := newTestExporter(t, cfg, nil)
	ctx := context.Background()
	start, at := time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at, 100)))
	// "requests" is accepted, "requests2" refused with a 400.
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1}, {Count: 1, Status: 400}}}))
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(time.Second), 110)))
	require.Eventually(t, func() bool { return em.Ledger().RequestsByStatus["400"] == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(2*time.Second), 120)))
	shutdown(t, exp)
	assert.Equal(t, "20", streamTotal(em.Ledger(), "requests"), "100 -> 120 once")
	assert.Equal(t, "10", streamTotal(em.Ledger(), "requests2"), "the refused +10 is dropped (counted), the later +10 sent")
}

// A Retry-After longer than retry_on_failure.max_interval is honoured.
func TestLongRetryAfterIsWaitedOut(t *testing.T) {
	em := startEmulator(t)
	three := 3
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1, Status: 429, RetryAfterSeconds: &three}}}))
	cfg := testConfig(em.URL)
	exp := newTestExporter(t, cfg, nil)
	start := time.Now()
	require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(3, hour)))
	require.Eventually(t, func() bool { return streamTotal(em.Ledger(), "requests") == "6" }, 20*time.Second, 20*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(start), 3*time.Second)
	assert.EqualValues(t, 2, em.Ledger().RequestsByStatus["429"]+em.Ledger().RequestsByStatus["200"], "one retry, after the delay asked for")
	shutdown(t, exp)
}

// With a daily budget, what does not fit today waits in the stored ledger
// (merging) and goes out, once, when there is budget again.
func TestDailyBudgetDefersWithoutLossOrDuplicates(t *testing.T) {
	em := startEmulator(t)
	dir := t.TempDir()
	cfg := testConfig(em.URL)
	cfg.Storage = &fileStorageID
	cfg.RateLimit.RecordsPerDay = 3
	cfg.ShutdownTimeout = time.Second

	host, stopExt := fileStorageHost(t, dir)
	exp := newTestExporter(t, cfg, host)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(2, hour))) // 1+2: 2 records
	require.Eventually(t, func() bool { return em.Ledger().RecordsAccepted == 2 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(3, hour.Add(time.Minute)))) // 1+2+3: 1 record fits today
	require.Eventually(t, func() bool { return em.Ledger().RecordsAccepted == 3 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(1500 * time.Millisecond)
	shutdown(t, exp)
	stopExt()
	assert.EqualValues(t, 3, em.Ledger().RecordsAccepted, "no more than the budget today")

	cfg.RateLimit.RecordsPerDay = 0 // "tomorrow"
	host, stopExt = fileStorageHost(t, dir)
	exp = newTestExporter(t, cfg, host)
	require.Eventually(t, func() bool { return streamTotal(em.Ledger(), "requests") == "9" }, 10*time.Second, 10*time.Millisecond)
	shutdown(t, exp)
	stopExt()
	assert.Equal(t, "9", streamTotal(em.Ledger(), "requests"), "each unit once")
}
