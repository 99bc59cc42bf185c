// Package bench compares the translator with the contrib Prometheus remote
// write translator on the same workload. It is a separate module so that the
// exporter does not depend on Prometheus.
package bench

import (
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/prometheusremotewrite"

	"github.com/cloudzero-otel/cloudzeroexporter/translator"
	"github.com/cloudzero-otel/cloudzeroexporter/translator/translatortest"
)

var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func perPoint(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*translatortest.WorkloadPoints), "ns/point")
}

// BenchmarkTranslate is translator.BenchmarkTranslate: the timestamps advance
// 10s per call (outside the timer) so that no point is out of order; in
// "new-keys" they advance an hour, so that every record key is new.
func BenchmarkTranslate(b *testing.B) {
	for _, tc := range []struct {
		name       string
		cumulative bool
		step       time.Duration
	}{{"cumulative", true, 10 * time.Second}, {"delta", false, 10 * time.Second}, {"cumulative-new-keys", true, time.Hour}} {
		b.Run(tc.name, func(b *testing.B) {
			now := base
			w := translatortest.NewWorkload(tc.cumulative, base.Add(-time.Hour))
			tr, err := translator.New(translator.Settings{Streams: translatortest.WorkloadStreams(),
				StartTime: base, Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			now = now.Add(tc.step)
			w.Advance(now)
			tr.Translate(w.Metrics)
			records := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				now = now.Add(tc.step)
				w.Advance(now)
				b.StartTimer()
				set, _ := tr.Translate(w.Metrics)
				records += set.Len()
			}
			b.StopTimer()
			if records != b.N*800 {
				b.Fatalf("%d records in %d calls", records, b.N)
			}
			perPoint(b)
		})
	}
}

// BenchmarkPrometheusRemoteWrite runs the cumulative workload through the
// contrib prometheusremotewrite.FromMetrics, as its own BenchmarkFromMetrics
// does (it rejects delta sums, so there is no delta variant).
func BenchmarkPrometheusRemoteWrite(b *testing.B) {
	w := translatortest.NewWorkload(true, base.Add(-time.Hour))
	w.Advance(base.Add(10 * time.Second))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ts, err := prometheusremotewrite.FromMetrics(w.Metrics, prometheusremotewrite.Settings{})
		// One series per point, plus target_info for each of the 10 resources.
		if err != nil || len(ts) != translatortest.WorkloadPoints+10 {
			b.Fatal(err, len(ts))
		}
	}
	b.StopTimer()
	perPoint(b)
}
