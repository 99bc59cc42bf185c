package cloudzerometric

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
)

var update = flag.Bool("update", false, "rewrite testdata/convert.json")

// everyKind is one metric of each type and number kind the SDK produces,
// with attributes of every type.
func everyKind() *metricdata.ResourceMetrics {
	t0 := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	t1 := t0.Add(10 * time.Second)
	attrs := attribute.NewSet(attribute.String("customer.id", "c1"), attribute.Int("shard", 3),
		attribute.Bool("paid", true), attribute.Float64("ratio", 0.5), attribute.StringSlice("tags", []string{"a", "b"}),
		attribute.Int64Slice("ids", []int64{1, 2}), attribute.BoolSlice("flags", []bool{true}), attribute.Float64Slice("ws", []float64{1.5}))
	odd := attribute.NewSet(attribute.String("customer.id", "c2"),
		attribute.KeyValue{Key: "raw", Value: attribute.ByteSliceValue([]byte("xy"))},
		attribute.KeyValue{Key: "m", Value: attribute.MapValue(attribute.String("k", "v"))},
		attribute.KeyValue{Key: "s", Value: attribute.SliceValue(attribute.IntValue(1), attribute.StringValue("x"))})
	return &metricdata.ResourceMetrics{
		Resource: resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "svc")),
		ScopeMetrics: []metricdata.ScopeMetrics{{
			Scope: instrumentation.Scope{Name: "lib", Version: "1.2.3", SchemaURL: "https://example.com/s", Attributes: attribute.NewSet(attribute.String("scope.k", "v"))},
			Metrics: []metricdata.Metrics{
				{Name: "g.int", Description: "an int gauge", Unit: "{item}", Data: metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{{Attributes: attrs, Time: t1, Value: 7}}}},
				{Name: "g.float", Data: metricdata.Gauge[float64]{DataPoints: []metricdata.DataPoint[float64]{{Attributes: odd, StartTime: t0, Time: t1, Value: 2.5}}}},
				{Name: "s.int", Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
					DataPoints: []metricdata.DataPoint[int64]{{Attributes: attrs, StartTime: t0, Time: t1, Value: 1 << 60}}}},
				{Name: "s.float", Data: metricdata.Sum[float64]{Temporality: metricdata.DeltaTemporality,
					DataPoints: []metricdata.DataPoint[float64]{{StartTime: t0, Time: t1, Value: -1.25}, {Attributes: odd, StartTime: t0, Time: t1, Value: 3}}}},
				{Name: "h.int", Data: metricdata.Histogram[int64]{Temporality: metricdata.DeltaTemporality, DataPoints: []metricdata.HistogramDataPoint[int64]{{
					Attributes: attrs, StartTime: t0, Time: t1, Count: 3, Sum: 12, Bounds: []float64{1, 10}, BucketCounts: []uint64{0, 2, 1},
					Min: metricdata.NewExtrema[int64](2), Max: metricdata.NewExtrema[int64](8)}}}},
				{Name: "h.float", Unit: "s", Data: metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality, DataPoints: []metricdata.HistogramDataPoint[float64]{{
					StartTime: t0, Time: t1, Count: 2, Sum: 0.75, Bounds: []float64{0.5}, BucketCounts: []uint64{1, 1}}}}},
				{Name: "eh", Data: metricdata.ExponentialHistogram[float64]{Temporality: metricdata.DeltaTemporality, DataPoints: []metricdata.ExponentialHistogramDataPoint[float64]{{
					Attributes: attrs, StartTime: t0, Time: t1, Count: 6, Sum: 9.5, Scale: 2, ZeroCount: 1, ZeroThreshold: 1e-9,
					PositiveBucket: metricdata.ExponentialBucket{Offset: -1, Counts: []uint64{1, 2}},
					NegativeBucket: metricdata.ExponentialBucket{Offset: 3, Counts: []uint64{2}},
					Min:            metricdata.NewExtrema(-4.0), Max: metricdata.NewExtrema(5.0)}}}},
				{Name: "summary", Data: metricdata.Summary{DataPoints: []metricdata.SummaryDataPoint{{
					Attributes: attrs, StartTime: t0, Time: t1, Count: 4, Sum: 10,
					QuantileValues: []metricdata.QuantileValue{{Quantile: 0.5, Value: 2}, {Quantile: 1, Value: 4}}}}}},
			},
		}},
	}
}

// TestToPdata: every type, number kind and attribute type arrives as the
// collector's OTLP receiver would have decoded it (testdata/convert.json;
// -update rewrites it, to be reviewed by hand).
func TestToPdata(t *testing.T) {
	got := toPdata(everyKind())
	// OTLP JSON, not golden's YAML: golden rewrites timestamps, which are part of the test.
	path := filepath.Join("testdata", "convert.json")
	if *update {
		b, err := (&pmetric.JSONMarshaler{}).MarshalMetrics(got)
		require.NoError(t, err)
		var buf bytes.Buffer
		require.NoError(t, json.Indent(&buf, b, "", "  "))
		require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	want, err := (&pmetric.JSONUnmarshaler{}).UnmarshalMetrics(b)
	require.NoError(t, err)
	require.NoError(t, pmetrictest.CompareMetrics(want, got))

	// A metric without data (an empty ResourceMetrics, or one without a resource) does not fail.
	require.Equal(t, 0, toPdata(&metricdata.ResourceMetrics{}).DataPointCount())
}
