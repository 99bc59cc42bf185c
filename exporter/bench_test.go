package exporter

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// BenchmarkEncodeChunk100k sorts, encodes and chunks 100k records of one
// stream into reused buffers, as Send does for each stream.
func BenchmarkEncodeChunk100k(b *testing.B) {
	const n = 100_000
	set := makeSet(b, n, "s")
	recs := set.Records("s")
	var c Chunker
	var entries []Entry
	var buf []byte
	var ms0, ms1 runtime.MemStats
	bodyBytes := 0
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	for b.Loop() {
		entries, _ = SortedEntries(entries[:0], recs)
		bodyBytes = 0
		for rest := entries; len(rest) > 0; {
			var k int
			buf, k = c.Encode(buf[:0], rest, 0)
			bodyBytes += len(buf)
			rest = rest[k:]
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	records := float64(b.N) * n
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/records, "ns/record")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/records, "allocB/record")
	b.ReportMetric(float64(bodyBytes)/n, "bodyB/record")
}

// BenchmarkSetMemoryPerKey measures the live heap of a record.Set holding
// 1M distinct realistic keys (hourly timestamp, customer-NNNNNN element, two
// filter keys). Target: <= 300 B/key.
func BenchmarkSetMemoryPerKey(b *testing.B) {
	const n = 1_000_000
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	features := []string{"billing", "search", "export", "reports"}
	var keyBytes int
	for b.Loop() {
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		set := record.NewSet()
		keyBytes = 0
		for i := range n {
			k, err := record.NewKey(record.Record{
				Timestamp:   base.Add(time.Duration(i/250_000) * time.Hour),
				Granularity: record.Hourly,
				ElementName: fmt.Sprintf("customer-%06d", i%62_500),
				Filter: []record.Dimension{
					{Key: "custom:feature", Values: []string{features[(i/62_500)%4]}},
					{Key: "tag:environment", Values: []string{"production"}},
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			keyBytes += len(k)
			set.Add("requests-by-customer", k, float64(i+1))
		}
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		if set.Len() != n {
			b.Fatal(set.Len())
		}
		b.ReportMetric(float64(ms1.HeapAlloc-ms0.HeapAlloc)/n, "heapB/key")
		b.ReportMetric(float64(keyBytes)/n, "keyLen")
		runtime.KeepAlive(set)
	}
}
