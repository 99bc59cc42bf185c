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
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

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
// by "requests" (element customer.id, filter custom:feature), batches flushed
// quickly and short retries.
func testConfig(endpoint string) *Config {
	cfg := createDefaultConfig().(*Config)
	cfg.ClientConfig.Endpoint = endpoint
	cfg.ClientConfig.Timeout = 5 * time.Second
	cfg.APIKey = testAPIKey
	cfg.Streams = []StreamConfig{{
		Name:        "requests",
		Metrics:     []string{"requests"},
		ElementName: "customer.id",
		Filter:      map[string]string{"custom:feature": "feature"},
	}}
	q := cfg.QueueConfig.Get()
	q.Batch.Get().FlushTimeout = 50 * time.Millisecond
	cfg.BackOffConfig.InitialInterval = 10 * time.Millisecond
	cfg.BackOffConfig.MaxInterval = 50 * time.Millisecond
	cfg.BackOffConfig.RandomizationFactor = 0
	cfg.BackOffConfig.MaxElapsedTime = time.Minute
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
	stream, body, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	require.True(t, ok)
	assert.Equal(t, "requests", stream)
	var req struct {
		Records []map[string]any `json:"records"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &req))
	assert.Len(t, req.Records, 2)
}

// TestQueueFullKeepsCumulativeState: when exporterhelper refuses records
// (queue full), the translator's state must not advance, or the usage in
// that point would be lost for good.
func TestQueueFullKeepsCumulativeState(t *testing.T) {
	em := startEmulator(t)
	cfg := testConfig(em.URL)
	q := cfg.QueueConfig.Get()
	q.QueueSize = 1
	q.NumConsumers = 1
	q.Batch = configoptional.None[exporterhelper.BatchConfig]()
	// Hold the only consumer: every request waits 300ms at the server.
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 100, DelayMS: 300}}}))
	exp := newTestExporter(t, cfg, nil)

	start := time.Now().Add(-time.Hour) // before the exporter started: the first point is a baseline
	at := time.Now().Add(-time.Minute)
	ctx := context.Background()
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at, 100)))
	refused := 0
	for i := 1; i <= 10; i++ {
		if exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(time.Duration(i)*time.Second), float64(100+10*i))) != nil {
			refused++
		}
	}
	require.Positive(t, refused, "the queue must have refused some points")
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{}))
	require.Eventually(t, func() bool {
		return exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(20*time.Second), 300)) == nil
	}, 10*time.Second, 50*time.Millisecond)
	shutdown(t, exp)
	assert.Equal(t, "200", streamTotal(em.Ledger(), "requests"), "100 -> 300 counted once, refused points included")
}

// TestPersistentQueueAndStateSurviveRestart: records refused by the server
// wait on disk; series state is restored, so a cumulative series fed across
// the restart loses no increment and counts none twice.
func TestPersistentQueueAndStateSurviveRestart(t *testing.T) {
	em := startEmulator(t)
	dir := t.TempDir()
	startHost := func() (component.Host, func()) { return fileStorageHost(t, dir) }
	cfg := testConfig(em.URL)
	cfg.QueueConfig.Get().StorageID = &fileStorageID

	// First run: the server refuses everything.
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1, Status: 503}}, Repeat: true}))
	host, stopExt := startHost()
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
	host, stopExt = startHost()
	exp = newTestExporter(t, cfg, host)
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(2*time.Second), 1010))) // +3 from the restored 1007
	require.Eventually(t, func() bool { return streamTotal(em.Ledger(), "requests") == "20" }, 30*time.Second, 20*time.Millisecond)
	shutdown(t, exp)
	stopExt()
	assert.Equal(t, "20", streamTotal(em.Ledger(), "requests"), "7 + 3 cumulative + 10 delta, each once")
}

// Without a queue, ConsumeMetrics returns the push's result: a failure after
// part of the records were accepted must not roll the series state back, or
// the accepted usage would be counted again at the next point.
func TestNoQueuePartialFailureCountsOnce(t *testing.T) {
	em := startEmulator(t)
	cfg := testConfig(em.URL)
	cfg.QueueConfig = configoptional.None[exporterhelper.QueueBatchConfig]()
	cfg.Streams = append(cfg.Streams, StreamConfig{Name: "requests2", Metrics: []string{"requests"},
		ElementName: "customer.id", Filter: map[string]string{"custom:feature": "feature"}})
	exp := newTestExporter(t, cfg, nil)
	ctx := context.Background()
	start, at := time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at, 100)))
	// "requests" is accepted, "requests2" refused with a 400.
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1}, {Count: 1, Status: 400}}}))
	assert.Error(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(time.Second), 110)))
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{}))
	require.NoError(t, exp.ConsumeMetrics(ctx, cumulativeSum("a", start, at.Add(2*time.Second), 120)))
	shutdown(t, exp)
	assert.Equal(t, "20", streamTotal(em.Ledger(), "requests"), "100 -> 120 once")
	assert.Equal(t, "10", streamTotal(em.Ledger(), "requests2"), "the refused +10 is dropped (counted), not re-counted")
}

// A Retry-After longer than retry_on_failure allows is waited out in the
// push: handed to exporterhelper, it would exceed max_elapsed_time and drop
// the batch.
func TestLongRetryAfterIsWaitedOut(t *testing.T) {
	em := startEmulator(t)
	three := 3
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1, Status: 429, RetryAfterSeconds: &three}}}))
	cfg := testConfig(em.URL)
	cfg.BackOffConfig.MaxElapsedTime = time.Second
	exp := newTestExporter(t, cfg, nil)
	start := time.Now()
	require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(3, hour)))
	require.Eventually(t, func() bool { return streamTotal(em.Ledger(), "requests") == "6" }, 20*time.Second, 20*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(start), 3*time.Second)
	shutdown(t, exp)
}

// With a daily budget, a batch is never left half sent waiting for the next
// day: a shutdown then would keep the whole persisted batch and re-send the
// accepted part at the next start.
func TestBudgetNeverLeavesBatchHalfSent(t *testing.T) {
	em := startEmulator(t)
	dir := t.TempDir()
	startHost := func() (component.Host, func()) { return fileStorageHost(t, dir) }
	cfg := testConfig(em.URL)
	cfg.QueueConfig.Get().StorageID = &fileStorageID
	cfg.RateLimit.RecordsPerDay = 3
	cfg.MaxRecordsPerRequest = 2

	host, stopExt := startHost()
	exp := newTestExporter(t, cfg, host)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(2, hour))) // 1+2, fits today
	require.Eventually(t, func() bool { return em.Ledger().RecordsAccepted == 2 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(3, hour.Add(time.Minute)))) // 1+2+3: waits for tomorrow
	time.Sleep(500 * time.Millisecond)
	shutdown(t, exp)
	stopExt()
	assert.Equal(t, "3", streamTotal(em.Ledger(), "requests"), "nothing of the second batch sent today")

	cfg.RateLimit.RecordsPerDay = 0 // "tomorrow"
	host, stopExt = startHost()
	exp = newTestExporter(t, cfg, host)
	require.Eventually(t, func() bool { return streamTotal(em.Ledger(), "requests") == "9" }, 10*time.Second, 10*time.Millisecond)
	shutdown(t, exp)
	stopExt()
	assert.Equal(t, "9", streamTotal(em.Ledger(), "requests"), "each record once")
}
