// Package translatortest has helpers for tests and benchmarks of the
// translator: a stable JSON rendering of records and the benchmark workload.
package translatortest // import "github.com/cloudzero-otel/cloudzeroexporter/translator/translatortest"

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// Record is one record as CloudZero receives it, with its stream.
type Record struct {
	Stream      string              `json:"stream"`
	Timestamp   string              `json:"timestamp"`
	Granularity string              `json:"granularity"`
	ElementName string              `json:"element_name"`
	Filter      map[string][]string `json:"filter,omitempty"`
	Value       string              `json:"value"`
}

// Records decodes every record of s from the JSON the API client would send,
// sorted by stream, timestamp, element and filter.
func Records(s *record.Set) ([]Record, error) {
	var out []Record
	for _, stream := range s.Streams() {
		for k, v := range s.Records(stream) {
			var r Record
			d := json.NewDecoder(bytes.NewReader(record.AppendRecord(nil, k, v)))
			d.DisallowUnknownFields()
			if err := d.Decode(&r); err != nil {
				return nil, fmt.Errorf("record %s: %w", k, err)
			}
			r.Stream = stream
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Record) int {
		fa, _ := json.Marshal(a.Filter)
		fb, _ := json.Marshal(b.Filter)
		return cmp.Or(cmp.Compare(a.Stream, b.Stream), cmp.Compare(a.Timestamp, b.Timestamp),
			cmp.Compare(a.ElementName, b.ElementName), bytes.Compare(fa, fb))
	})
	return out, nil
}

// RecordsJSON renders Records(s) as an indented JSON array ending in a newline.
func RecordsJSON(s *record.Set) ([]byte, error) {
	rs, err := Records(s)
	if err != nil {
		return nil, err
	}
	if rs == nil {
		rs = []Record{}
	}
	b, err := json.MarshalIndent(rs, "", "  ")
	return append(b, '\n'), err
}

// The benchmark workload: 2,000 points per call, 1,000 of a sum and 1,000
// of a gauge, spread over 10 resources of 5 attributes each, every point with
// 2 attributes (customer.id, feature). Every point is its own series.
const (
	WorkloadPoints    = 2000
	workloadResources = 10
	workloadPerMetric = WorkloadPoints / workloadResources / 2
)

// WorkloadStreams maps the workload's two metrics onto two streams with the
// element and one filter each; the gauge is integrated.
func WorkloadStreams() []translator.Stream {
	return []translator.Stream{
		{Name: "requests", Metrics: []string{"app.requests"}, Granularity: record.Hourly,
			ElementName: "customer.id", Filter: map[string]string{"custom:feature": "feature"}},
		{Name: "memory", Metrics: []string{"app.memory.usage"}, Granularity: record.Hourly,
			ElementName: "customer.id", Filter: map[string]string{"custom:feature": "feature"}},
	}
}

// Workload is the benchmark input; Advance moves it to its next export.
type Workload struct {
	Metrics    pmetric.Metrics
	cumulative bool
	sums       []pmetric.NumberDataPoint
	gauges     []pmetric.NumberDataPoint
}

// NewWorkload builds the workload with a cumulative or delta monotonic sum,
// its cumulative series starting at start.
func NewWorkload(cumulative bool, start time.Time) *Workload {
	w := &Workload{Metrics: pmetric.NewMetrics(), cumulative: cumulative}
	for r := range workloadResources {
		rm := w.Metrics.ResourceMetrics().AppendEmpty()
		ra := rm.Resource().Attributes()
		ra.PutStr("service.name", "checkout")
		ra.PutStr("service.instance.id", fmt.Sprintf("instance-%02d", r))
		ra.PutStr("host.name", fmt.Sprintf("ip-10-0-0-%d.ec2.internal", r))
		ra.PutStr("deployment.environment", "production")
		ra.PutStr("cloud.region", "us-east-1")
		sm := rm.ScopeMetrics().AppendEmpty()
		sm.Scope().SetName("github.com/example/checkout")
		sum := sm.Metrics().AppendEmpty()
		sum.SetName("app.requests")
		s := sum.SetEmptySum()
		s.SetIsMonotonic(true)
		s.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
		if cumulative {
			s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		}
		gauge := sm.Metrics().AppendEmpty()
		gauge.SetName("app.memory.usage")
		gauge.SetUnit("By")
		g := gauge.SetEmptyGauge()
		for i := range workloadPerMetric {
			customer := fmt.Sprintf("customer-%03d", i)
			feature := fmt.Sprintf("feature-%d", (r+i)%4)
			dp := s.DataPoints().AppendEmpty()
			dp.Attributes().PutStr("customer.id", customer)
			dp.Attributes().PutStr("feature", feature)
			if cumulative {
				dp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
			}
			w.sums = append(w.sums, dp)
			dp = g.DataPoints().AppendEmpty()
			dp.Attributes().PutStr("customer.id", customer)
			dp.Attributes().PutStr("feature", feature)
			dp.SetDoubleValue(float64(1<<20 + i))
			w.gauges = append(w.gauges, dp)
		}
	}
	return w
}

// Advance sets every point's timestamp to ts and gives each sum 1 to 5 more
// requests, so the next Translate produces records.
func (w *Workload) Advance(ts time.Time) {
	t := pcommon.NewTimestampFromTime(ts)
	for i, dp := range w.sums {
		inc := int64(1 + i%5)
		if w.cumulative {
			inc += dp.IntValue()
		}
		dp.SetIntValue(inc)
		dp.SetTimestamp(t)
	}
	for _, dp := range w.gauges {
		dp.SetTimestamp(t)
	}
}

// BenchmarkTranslate runs the documented workload (2,000 points, 1,000 sums
// + 1,000 gauges, 5 resource and 2 point attributes) through one Translator,
// advancing the timestamps 10s per call (outside the timer) as a real export
// interval would, so that every call produces 800 records (400 per stream).
// In "cumulative-new-keys" they advance an hour per call, so every record is
// in a new bucket: the worst case for key encoding. It reports ns/point.
// Shared by translator's own benchmark and the bench module's comparison.
func BenchmarkTranslate(b *testing.B) {
	for _, tc := range []struct {
		name       string
		cumulative bool
		step       time.Duration
	}{{"cumulative", true, 10 * time.Second}, {"delta", false, 10 * time.Second}, {"cumulative-new-keys", true, time.Hour}} {
		b.Run(tc.name, func(b *testing.B) {
			base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			now := base
			w := NewWorkload(tc.cumulative, base.Add(-time.Hour))
			tr, err := translator.New(translator.Settings{Streams: WorkloadStreams(),
				StartTime: base, Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			step := func() {
				now = now.Add(tc.step)
				w.Advance(now)
			}
			step()
			tr.Translate(w.Metrics) // baselines
			records := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				step()
				b.StartTimer()
				set, st := tr.Translate(w.Metrics)
				records += set.Len()
				if len(st.Dropped) > 0 || st.Points != WorkloadPoints {
					b.Fatalf("unexpected stats %+v", st)
				}
			}
			b.StopTimer()
			if records != b.N*800 { // 100 customers × 4 features × 2 streams
				b.Fatalf("%d records in %d calls", records, b.N)
			}
			ReportPerPoint(b)
		})
	}
}

// ReportPerPoint reports the benchmark's time per workload point.
func ReportPerPoint(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*WorkloadPoints), "ns/point")
}
