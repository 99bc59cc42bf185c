package cloudzeroexporter

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

// The tests in this file reproduce, with the shipped defaults (only
// endpoint, api_key and streams set), the holes the delivery-core issue
// lists. Each one failed on the exporterhelper-queue design.

// defaultConfig is the shipped default config with only what a user must set.
func defaultConfig(endpoint string) *Config {
	cfg := createDefaultConfig().(*Config)
	cfg.ClientConfig.Endpoint = endpoint
	cfg.APIKey = testAPIKey
	cfg.Streams = []StreamConfig{{
		Name:        "requests",
		Metrics:     []string{"requests"},
		ElementName: "customer.id",
		Filter:      map[string]string{"custom:feature": "feature"},
	}}
	return cfg
}

func startDefault(t *testing.T, cfg *Config) (consume func(pmetric.Metrics) error, stop func()) {
	t.Helper()
	exp := newTestExporter(t, cfg, nil)
	return func(md pmetric.Metrics) error { return exp.ConsumeMetrics(context.Background(), md) },
		func() { shutdown(t, exp) }
}

// deltaPoints builds one delta sum point of "requests" per element, each
// with the value given.
func deltaPoints(at time.Time, values map[string]int64) pmetric.Metrics {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("requests")
	sum := m.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	for elem, v := range values {
		dp := sum.DataPoints().AppendEmpty()
		dp.SetStartTimestamp(pcommon.NewTimestampFromTime(at.Add(-time.Second)))
		dp.SetTimestamp(pcommon.NewTimestampFromTime(at))
		dp.SetIntValue(v)
		dp.Attributes().PutStr("customer.id", elem)
		dp.Attributes().PutStr("feature", "billing")
	}
	return md
}

// Hole 1: a graceful shutdown while CloudZero answers a burst of 503, 429
// and 502 must lose nothing (the old design waited up to flush_timeout, 5
// minutes, tried once at shutdown and dropped the records).
func TestHoleShutdownDuringStormLosesNothing(t *testing.T) {
	em := startEmulator(t)
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{
		{Count: 12, Status: 503}, {Count: 4, Status: 429}, {Count: 3, Status: 502},
	}}))
	consume, stop := startDefault(t, defaultConfig(em.URL))
	at := time.Now().Add(-time.Minute)
	want := int64(0)
	for i := range 20 {
		values := map[string]int64{}
		for c := range 10 {
			values[fmt.Sprintf("customer-%02d", c)] = int64(i + c)
			want += int64(i + c)
		}
		require.NoError(t, consume(deltaPoints(at, values)))
	}
	stop()
	l := em.Ledger()
	assert.Equal(t, fmt.Sprint(want), streamTotal(l, "requests"), "every unit delivered before the shutdown ended; requests %v", l.RequestsByStatus)
	assert.Zero(t, l.AmbiguousAppliedRequests)
}

// Hole 2: 10,000 customers exported every interval are only 10,000
// distinct records; the old queue counted records before they merged and
// refused exports from the 21st on.
func TestHoleManyExportsOfTheSameKeysAreAccepted(t *testing.T) {
	em := startEmulator(t)
	consume, stop := startDefault(t, defaultConfig(em.URL))
	const customers, exports = 10_000, 25
	values := make(map[string]int64, customers)
	for c := range customers {
		values[fmt.Sprintf("customer-%05d", c)] = 1
	}
	at := time.Now().Add(-time.Minute)
	for i := range exports {
		require.NoError(t, consume(deltaPoints(at, values)), "export %d refused", i+1)
	}
	stop()
	assert.Equal(t, fmt.Sprint(customers*exports), streamTotal(em.Ledger(), "requests"))
}

// Hole 4a: a record of 10,001 to 10,240 bytes passed the old 10 KiB check,
// and CloudZero's 10,000-byte limit then refused its whole request.
func TestHoleRecordJustOver10000BytesIsDroppedAlone(t *testing.T) {
	em := startEmulator(t)
	consume, stop := startDefault(t, defaultConfig(em.URL))
	// The record is {"timestamp":...,"element_name":"xxx...","filter":{...},"value":"1"}:
	// about 130 bytes besides the element name.
	long := strings.Repeat("x", 10_100-130)
	require.NoError(t, consume(deltaPoints(time.Now().Add(-time.Minute), map[string]int64{"a": 1, "b": 2, long: 4})))
	stop()
	l := em.Ledger()
	assert.Equal(t, "3", streamTotal(l, "requests"), "the valid records are delivered; requests %v", l.RequestsByStatus)
	assert.Zero(t, l.RequestsByStatus["400"], "nothing CloudZero refuses is sent: %v", l.RecentErrors)
}

// Hole 4b: one record CloudZero refuses with 400 must cost only itself, not
// every other record of its request.
func TestHoleOneRefusedRecordCostsOnlyItself(t *testing.T) {
	em, err := emulator.Start("127.0.0.1:0", emulator.Config{APIKey: testAPIKey, MaxRecordBytes: 400})
	require.NoError(t, err)
	t.Cleanup(func() { _ = em.Shutdown(context.Background()) })
	consume, stop := startDefault(t, defaultConfig(em.URL))
	values := map[string]int64{strings.Repeat("y", 500): 1000}
	want := int64(0)
	for c := range 40 {
		values[fmt.Sprintf("customer-%02d", c)] = int64(c + 1)
		want += int64(c + 1)
	}
	require.NoError(t, consume(deltaPoints(time.Now().Add(-time.Minute), values)))
	stop()
	l := em.Ledger()
	assert.Equal(t, fmt.Sprint(want), streamTotal(l, "requests"), "only the oversized record is lost; requests %v", l.RequestsByStatus)
}

// Translator edges, item 5: a key read with a trailing newline (from
// ${file:...}) failed every request, forever, as a retryable transport
// error. Surrounding whitespace is not part of the key; whitespace inside
// it is refused at validation, without showing the key.
func TestAPIKeyWhitespace(t *testing.T) {
	em := startEmulator(t)
	cfg := defaultConfig(em.URL)
	cfg.APIKey = testAPIKey + "\n"
	consume, stop := startDefault(t, cfg)
	require.NoError(t, consume(deltaPoints(time.Now().Add(-time.Minute), map[string]int64{"a": 3})))
	stop()
	assert.Equal(t, "3", streamTotal(em.Ledger(), "requests"))

	cfg.APIKey = "abc def-secret"
	err := cfg.Validate()
	require.ErrorContains(t, err, "api_key: contains whitespace")
	assert.NotContains(t, err.Error(), "secret")
	cfg.APIKey = " \n"
	assert.ErrorContains(t, cfg.Validate(), "api_key: must be set")
}
