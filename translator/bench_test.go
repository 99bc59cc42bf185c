package translator_test

import (
	"testing"
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/translator"
	"github.com/cloudzero-otel/cloudzeroexporter/translator/translatortest"
)

// BenchmarkTranslate runs the documented workload (translatortest.Workload:
// 2,000 points, 1,000 sums + 1,000 gauges, 5 resource and 2 point
// attributes) through one Translator, advancing the timestamps 10s per call
// as a real export interval would, so that every call produces records
// (800: 400 per stream). In "new-keys" the timestamps advance an hour per
// call, so every record is in a new bucket: the worst case for key encoding.
func BenchmarkTranslate(b *testing.B) {
	for _, tc := range []struct {
		name       string
		cumulative bool
		step       time.Duration
	}{{"cumulative", true, 10 * time.Second}, {"delta", false, 10 * time.Second}, {"cumulative-new-keys", true, time.Hour}} {
		b.Run(tc.name, func(b *testing.B) {
			base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			now := base
			w := translatortest.NewWorkload(tc.cumulative, base.Add(-time.Hour))
			tr, err := translator.New(translator.Settings{Streams: translatortest.WorkloadStreams(),
				StartTime: base, Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			records, calls := 0, 0
			step := func() {
				now = now.Add(tc.step)
				w.Advance(now)
			}
			step()
			tr.Translate(w.Metrics) // baselines
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				step()
				b.StartTimer()
				set, st := tr.Translate(w.Metrics)
				records += set.Len()
				calls++
				if len(st.Dropped) > 0 || st.Points != translatortest.WorkloadPoints {
					b.Fatalf("unexpected stats %+v", st)
				}
			}
			b.StopTimer()
			if records != calls*800 { // 100 customers × 4 features × 2 streams
				b.Fatalf("%d records in %d calls", records, calls)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*translatortest.WorkloadPoints), "ns/point")
		})
	}
}
