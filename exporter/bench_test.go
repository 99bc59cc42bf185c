package exporter

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
	"github.com/cloudzero-otel/cloudzeroexporter/translator/translatortest"
)

var benchBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// workloadRecords is what each call of the translator's workload yields:
// 100 customers × 4 features × 2 streams.
const workloadRecords = 800

// fileStorage starts a file_storage extension (bbolt) in dir and returns a
// client for one component, as the collector gives it to the exporter.
func fileStorage(tb testing.TB, dir string) (storage.Client, func()) {
	tb.Helper()
	f := filestorage.NewFactory()
	cfg := f.CreateDefaultConfig().(*filestorage.Config)
	cfg.Directory = dir
	ext, err := f.Create(context.Background(), extensiontest.NewNopSettings(f.Type()), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := ext.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		tb.Fatal(err)
	}
	client, err := ext.(storage.Extension).GetClient(context.Background(), component.KindExporter,
		component.MustNewIDWithName("cloudzero", "bench"), "ledger")
	if err != nil {
		tb.Fatal(err)
	}
	return client, func() { _ = ext.Shutdown(context.Background()) }
}

// BenchmarkConsume compares, in one run, the translator alone with the
// delivery core's Consume (translation, ledger increments and, with
// storage, the journal record in file_storage) on the translator's
// documented workload: 2,000 points and 800 records per call.
func BenchmarkConsume(b *testing.B) {
	for _, cumulative := range []bool{true, false} {
		kind := map[bool]string{true: "cumulative", false: "delta"}[cumulative]
		b.Run(kind+"/translate-only", func(b *testing.B) {
			benchConsume(b, cumulative, func(tr *translator.Translator, md pmetric.Metrics) int {
				set, _ := tr.Translate(md)
				return set.Len()
			}, nil)
		})
		for _, withStorage := range []bool{false, true} {
			name := kind + "/consume-memory"
			if withStorage {
				name = kind + "/consume-file_storage"
			}
			b.Run(name, func(b *testing.B) {
				var d *Delivery
				benchConsume(b, cumulative, func(_ *translator.Translator, md pmetric.Metrics) int {
					if _, err := d.Consume(context.Background(), md); err != nil {
						b.Fatal(err)
					}
					return workloadRecords
				}, func(now func() time.Time) {
					cfg := DeliveryConfig{
						Translator:    translator.Settings{Streams: translatortest.WorkloadStreams(), StartTime: benchBase, Now: now},
						DryRun:        io.Discard,
						FlushInterval: 24 * time.Hour,
						Now:           now,
					}
					if withStorage {
						client, stop := fileStorage(b, b.TempDir())
						b.Cleanup(stop)
						cfg.Storage = client
					}
					var err error
					if d, err = NewDelivery(cfg); err != nil {
						b.Fatal(err)
					}
					if err := d.Start(context.Background()); err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { _ = d.Shutdown(context.Background()) })
				})
			})
		}
	}
}

func benchConsume(b *testing.B, cumulative bool, consume func(*translator.Translator, pmetric.Metrics) int, setup func(now func() time.Time)) {
	now := benchBase
	clock := func() time.Time { return now }
	w := translatortest.NewWorkload(cumulative, benchBase.Add(-time.Hour))
	tr, err := translator.New(translator.Settings{Streams: translatortest.WorkloadStreams(), StartTime: benchBase, Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	if setup != nil {
		setup(clock)
	}
	step := func() {
		now = now.Add(10 * time.Second)
		w.Advance(now)
	}
	step()
	consume(tr, w.Metrics) // baselines
	records := 0
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		step()
		b.StartTimer()
		records += consume(tr, w.Metrics)
	}
	b.StopTimer()
	if records != b.N*workloadRecords {
		b.Fatalf("%d records in %d calls", records, b.N)
	}
	translatortest.ReportPerPoint(b)
}

// keysMetrics returns export number call of per points, point i carrying
// 1+i%7 units for key i mod keys (customer i/5, one of 5 features; keys 0
// means every point a new key), as internal/loadgen sends them.
func keysMetrics(call, per, keys int, ts time.Time) pmetric.Metrics {
	md, dps := monotonicSum(pmetric.AggregationTemporalityDelta)
	dps.EnsureCapacity(per)
	for i := call * per; i < (call+1)*per; i++ {
		k := i
		if keys > 0 {
			k = i % keys
		}
		dp := dps.AppendEmpty()
		dp.SetTimestamp(pcommon.NewTimestampFromTime(ts))
		dp.SetIntValue(int64(1 + i%7))
		dp.Attributes().PutStr("customer.id", fmt.Sprintf("customer-%07d", k/5))
		dp.Attributes().PutStr("feature", fmt.Sprintf("feature-%d", k%5))
	}
	return md
}

// BenchmarkLedgerFootprint fills the ledger with 1,000,000 keys (records of
// ~130 bytes: element customer-NNNNNNN, filter custom:feature) and reports
// the heap per key; with file_storage, also the disk per key after the
// run: the bbolt file (the journal and the snapshots compaction wrote; bbolt
// keeps the pages it used) and a snapshot of the ledger alone. Run with
// -benchtime=1x.
func BenchmarkLedgerFootprint(b *testing.B) {
	for _, tc := range []struct {
		name string
		keys int
		disk bool
	}{{"memory-1M", 1_000_000, false}, {"file_storage-200k", 200_000, true}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				ledgerFootprint(b, tc.keys, tc.disk)
			}
		})
	}
}

func ledgerFootprint(b *testing.B, keys int, disk bool) {
	now := time.Now()
	cfg := DeliveryConfig{
		Translator: translator.Settings{Streams: []translator.Stream{{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly,
			ElementName: "customer.id", Filter: map[string]string{"custom:feature": "feature"}}}},
		DryRun: io.Discard, FlushInterval: 24 * time.Hour, MaxKeys: keys,
	}
	dir := b.TempDir()
	var stop func()
	if disk {
		cfg.Storage, stop = fileStorage(b, dir)
	}
	d, err := NewDelivery(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	const per = 10_000
	ts := now.Add(-time.Minute)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for call := range keys / per {
		if _, err := d.Consume(context.Background(), keysMetrics(call, per, 0, ts)); err != nil {
			b.Fatal(err)
		}
	}
	// The translator keeps aggregation entries for a few idle calls (a
	// cache bounded by maxAggEntries): let them go, so that what remains is
	// the ledger.
	for range 32 {
		d.tr.Translate(pmetric.NewMetrics())
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := d.Stats().OpenKeys; got != keys {
		b.Fatalf("%d keys, want %d", got, keys)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(keys), "heap-B/key")
	if disk {
		d.mu.Lock()
		snap, err := d.snapshotLocked()
		d.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		size := len(snap.translator)
		for _, c := range snap.chunks {
			size += len(c)
		}
		b.ReportMetric(float64(size)/float64(keys), "snapshot-B/key")
	}
	if err := d.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
	if disk {
		stop()
		var size int64
		_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, _ error) error {
			if fi != nil && !fi.IsDir() {
				size += fi.Size()
			}
			return nil
		})
		b.ReportMetric(float64(size)/float64(keys), "disk-B/key")
	}
	runtime.KeepAlive(d)
}

// BenchmarkConsumeFleet is the collector benchmark's load (internal/loadgen,
// e2e BenchmarkCollectorCPU) without the collector: exports of 1,000 delta
// points cycling through 5,000 keys, so that each export holds a fifth of
// the keys.
func BenchmarkConsumeFleet(b *testing.B) {
	ts := time.Now().Add(-time.Minute)
	const per, keys = 1000, 5000
	exports := make([]pmetric.Metrics, keys/per)
	for i := range exports {
		exports[i] = keysMetrics(i, per, keys, ts)
	}
	d, err := NewDelivery(DeliveryConfig{
		Translator: translator.Settings{Streams: []translator.Stream{{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly,
			ElementName: "customer.id", Filter: map[string]string{"custom:feature": "feature"}}}},
		DryRun: io.Discard, FlushInterval: 24 * time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = d.Shutdown(context.Background()) }()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := d.Consume(context.Background(), exports[i%len(exports)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/point")
}
