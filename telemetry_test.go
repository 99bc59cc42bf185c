package cloudzeroexporter

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/metadatatest"
)

// TestSelfTelemetry checks that what happened to points and records shows in
// the exporter's own metrics.
func TestSelfTelemetry(t *testing.T) {
	em := startEmulator(t)
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1, Status: 503}}}))
	tt := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tt.Shutdown(context.Background())) })

	cfg := testConfig(em.URL)
	exp, err := NewFactory().CreateMetrics(context.Background(), metadatatest.NewSettings(tt), cfg)
	require.NoError(t, err)
	require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))

	md := deltaSums(3, hour)
	// One point without its element, one of a metric feeding no stream.
	sum := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Sum()
	sum.DataPoints().At(2).Attributes().Remove("customer.id")
	other := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().AppendEmpty()
	other.SetName("unrelated")
	other.SetEmptyGauge().DataPoints().AppendEmpty().SetIntValue(1)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), md))
	require.Eventually(t, func() bool { return streamTotal(em.Ledger(), "requests") == "3" }, 10*time.Second, 10*time.Millisecond)
	ignore := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
	// The ledger gauges are read while the exporter runs: both keys confirmed.
	time.Sleep(1100 * time.Millisecond) // the gauges' stats are computed at most once a second
	metadatatest.AssertEqualExporterCloudzeroLedgerUnsentKeys(t, tt, []metricdata.DataPoint[int64]{{Value: 0}}, ignore...)
	shutdown(t, exp)

	metadatatest.AssertEqualExporterCloudzeroDatapointsReceived(t, tt, []metricdata.DataPoint[int64]{{Value: 3}}, ignore...)
	metadatatest.AssertEqualExporterCloudzeroDatapointsIgnored(t, tt, []metricdata.DataPoint[int64]{{Value: 1}}, ignore...)
	metadatatest.AssertEqualExporterCloudzeroDatapointsDropped(t, tt, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: attribute.NewSet(attribute.String("reason", "missing_element"))},
	}, ignore...)
	metadatatest.AssertEqualExporterCloudzeroRecordsSent(t, tt, []metricdata.DataPoint[int64]{
		{Value: 2, Attributes: attribute.NewSet(attribute.String("operation", "sum"))},
	}, ignore...)
	metadatatest.AssertEqualExporterCloudzeroRequests(t, tt, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: attribute.NewSet(attribute.String("status_class", "2xx"))},
		{Value: 1, Attributes: attribute.NewSet(attribute.String("status_class", "5xx"))},
	}, ignore...)
	// A 503 does not prove CloudZero did not apply the request: with sum, its
	// records are ambiguous (this emulator did not apply them: no duplicate).
	metadatatest.AssertEqualExporterCloudzeroAmbiguousRecords(t, tt, []metricdata.DataPoint[int64]{{Value: 2}}, ignore...)
	metadatatest.AssertEqualExporterCloudzeroAmbiguousUnits(t, tt, []metricdata.DataPoint[float64]{{Value: 3}}, ignore...)
}
