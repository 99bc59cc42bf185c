package cloudzerometric

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.uber.org/zap"

	cloudzeroexporter "github.com/cloudzero-otel/cloudzeroexporter"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/metadata"
)

// benchRM is one SDK collection: a delta counter with points series
// (customers × features), stamped at.
func benchRM(points int, at time.Time) *metricdata.ResourceMetrics {
	dps := make([]metricdata.DataPoint[int64], points)
	for i := range dps {
		dps[i] = metricdata.DataPoint[int64]{
			Attributes: attribute.NewSet(attribute.String("customer.id", fmt.Sprintf("customer-%04d", i/10)),
				attribute.String("feature", fmt.Sprintf("feature-%d", i%10)), attribute.String("region", "eu-west-1")),
			StartTime: at.Add(-time.Minute), Time: at, Value: int64(i%7 + 1),
		}
	}
	return &metricdata.ResourceMetrics{
		Resource: resource.NewSchemaless(attribute.String("service.name", "bench"), attribute.String("host.name", "h1")),
		ScopeMetrics: []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{{
			Name: "t.requests", Data: metricdata.Sum[int64]{Temporality: metricdata.DeltaTemporality, IsMonotonic: true, DataPoints: dps},
		}}}},
	}
}

func benchConfig() *Config {
	cfg := testConfig("http://127.0.0.1:1")
	cfg.DryRun = true // nothing leaves the process; flush_interval (5m) keeps the sender idle anyway
	return cfg
}

// BenchmarkExport: the cost per data point of Export (conversion to pdata,
// then the collector component's path: translator and ledger) next to the
// collector's path alone (ConsumeMetrics through exporterhelper, as the
// collector calls it) and the OTLP decoding the collector's receiver does
// to get its pdata, on the same points, in the same run. 1,000 series of
// a delta counter per export, all in one hour's keys: memory stays flat.
func BenchmarkExport(b *testing.B) {
	const points = 1000
	ctx := context.Background()
	base := time.Now().Truncate(time.Hour).Add(time.Minute)
	rm := benchRM(points, base)
	perPoint := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*points), "ns/point")
	}

	b.Run("sdk_export", func(b *testing.B) {
		exp, err := New(ctx, benchConfig(), WithLogger(zap.NewNop())) // dry_run warns once
		require.NoError(b, err)
		defer exp.Shutdown(ctx)
		b.ReportAllocs()
		for b.Loop() {
			if err := exp.Export(ctx, rm); err != nil {
				b.Fatal(err)
			}
		}
		perPoint(b)
	})

	b.Run("collector_consume", func(b *testing.B) {
		f := cloudzeroexporter.NewFactory()
		m, err := f.CreateMetrics(ctx, exportertest.NewNopSettings(metadata.Type), benchConfig())
		require.NoError(b, err)
		require.NoError(b, m.Start(ctx, componenttest.NewNopHost()))
		defer m.Shutdown(ctx)
		md := toPdata(rm) // the receiver's work, not timed: the collector gets pdata
		b.ReportAllocs()
		for b.Loop() {
			if err := m.ConsumeMetrics(ctx, md); err != nil {
				b.Fatal(err)
			}
		}
		perPoint(b)
	})

	// What the collector does instead of toPdata: its OTLP receiver decodes
	// the request body (here without the network and the HTTP server).
	b.Run("collector_otlp_decode", func(b *testing.B) {
		body, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(toPdata(rm))
		require.NoError(b, err)
		u := &pmetric.ProtoUnmarshaler{}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := u.UnmarshalMetrics(body); err != nil {
				b.Fatal(err)
			}
		}
		perPoint(b)
	})

	b.Run("convert_only", func(b *testing.B) {
		b.ReportAllocs()
		var md pmetric.Metrics
		for b.Loop() {
			md = toPdata(rm)
		}
		_ = md
		perPoint(b)
	})
}
