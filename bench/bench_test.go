// Package bench compares the translator with the contrib Prometheus remote
// write translator on the same workload. It is a separate module so that the
// exporter does not depend on Prometheus.
package bench

import (
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/prometheusremotewrite"

	"github.com/cloudzero-otel/cloudzeroexporter/translator/translatortest"
)

var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// BenchmarkTranslate is the translator's own benchmark, run here beside the
// baseline so that both figures come from one run.
func BenchmarkTranslate(b *testing.B) { translatortest.BenchmarkTranslate(b) }

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
	translatortest.ReportPerPoint(b)
}
