package exporter

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// memStorage is a storage.Client over a map. copy() is what a crash leaves:
// every Set that returned, nothing else.
type memStorage struct {
	mu      sync.Mutex
	m       map[string][]byte
	failSet func(key string) error // nil: never fail
	closed  bool
}

func newMemStorage() *memStorage { return &memStorage{m: map[string][]byte{}} }

func (s *memStorage) Get(_ context.Context, k string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[k]; ok {
		return append([]byte(nil), v...), nil
	}
	return nil, nil
}

func (s *memStorage) Set(ctx context.Context, k string, v []byte) error {
	return s.Batch(ctx, storage.SetOperation(k, v))
}

func (s *memStorage) Delete(ctx context.Context, k string) error {
	return s.Batch(ctx, storage.DeleteOperation(k))
}

func (s *memStorage) Batch(_ context.Context, ops ...*storage.Operation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, op := range ops {
		if op.Type == storage.Set && s.failSet != nil {
			if err := s.failSet(op.Key); err != nil {
				return err
			}
		}
	}
	for _, op := range ops {
		switch op.Type {
		case storage.Get:
			op.Value = s.m[op.Key]
		case storage.Set:
			s.m[op.Key] = append([]byte(nil), op.Value...)
		case storage.Delete:
			delete(s.m, op.Key)
		}
	}
	return nil
}

func (s *memStorage) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *memStorage) copy() *memStorage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &memStorage{m: maps.Clone(s.m)}
}

func (s *memStorage) keys(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k := range s.m {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

// monotonicSum returns metrics holding one monotonic sum "m" of the given
// temporality, and its points to fill.
func monotonicSum(temporality pmetric.AggregationTemporality) (pmetric.Metrics, pmetric.NumberDataPointSlice) {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("m")
	s := m.SetEmptySum()
	s.SetIsMonotonic(true)
	s.SetAggregationTemporality(temporality)
	return md, s.DataPoints()
}

// deltas builds one delta sum point of metric "m" per element, at ts.
func deltas(ts time.Time, values map[string]float64) pmetric.Metrics {
	md, dps := monotonicSum(pmetric.AggregationTemporalityDelta)
	for elem, v := range values {
		dp := dps.AppendEmpty()
		dp.SetTimestamp(pcommon.NewTimestampFromTime(ts))
		dp.SetDoubleValue(v)
		dp.Attributes().PutStr("customer.id", elem)
	}
	return md
}

func startEm(t *testing.T, cfg emulator.Config) *emulator.Instance {
	t.Helper()
	cfg.APIKey = testKey
	em, err := emulator.Start("127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = em.Shutdown(context.Background()) })
	return em
}

// testDelivery returns a started Delivery of one HOURLY stream "s" (metric
// m, element customer.id) sending to em, with retries every 10ms.
func testDelivery(t *testing.T, em *emulator.Instance, mod func(*DeliveryConfig)) *Delivery {
	t.Helper()
	cfg := DeliveryConfig{
		Translator: translator.Settings{Streams: []translator.Stream{{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "customer.id"}}},
		Backoff:    Backoff{InitialInterval: 10 * time.Millisecond, MaxInterval: 10 * time.Millisecond, Multiplier: 1},
		Client:     NewClient(nil, em.URL, testKey),
	}
	cfg.Client.hc.Timeout = 5 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	d, err := NewDelivery(cfg)
	require.NoError(t, err)
	require.NoError(t, d.Start(context.Background()))
	return d
}

func shutdownNow(t *testing.T, d *Delivery) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, d.Shutdown(ctx))
}

func total(l emulator.Ledger, stream string) string {
	for _, s := range l.Streams {
		if s.Name == stream {
			return s.Total
		}
	}
	return "0"
}

var recent = time.Now().UTC().Truncate(time.Hour).Add(-time.Hour).Add(30 * time.Minute)

// The ledger's two modes, operation by operation.
func TestLedgerModes(t *testing.T) {
	key, err := record.NewKey(record.Record{Timestamp: recent, Granularity: record.Hourly, ElementName: "a"})
	require.NoError(t, err)
	for _, tc := range []struct {
		op   Op
		want []float64 // what each of the three sends carries
	}{
		{OpSum, []float64{3, 4 + 5, 6}},   // the failed 4 merges with the 5 counted meanwhile
		{OpReplace, []float64{3, 12, 18}}, // each send is the total
	} {
		t.Run(string(tc.op), func(t *testing.T) {
			l := newLedger(tc.op, 10)
			id, err := l.bind(noID, "s", key)
			require.NoError(t, err)
			l.add(id, 1, 1)
			l.add(id, 2, 2)
			assert.True(t, l.sendable(&l.entries[id]))
			assert.Equal(t, tc.want[0], l.begin(id, 10))
			assert.False(t, l.sendable(&l.entries[id]), "in flight")
			l.confirm(id)
			assert.False(t, l.unsent(&l.entries[id]))

			l.add(id, 4, 3)
			l.begin(id, 20)
			l.add(id, 5, 4) // while in flight
			l.fail(id)
			assert.Equal(t, tc.want[1], l.begin(id, 30))
			l.confirm(id)
			l.add(id, 6, 5)
			assert.Equal(t, tc.want[2], l.begin(id, 40))
			l.confirm(id)
			assert.False(t, l.unsent(&l.entries[id]))
			assert.Zero(t, l.entries[id].unsentSince)
		})
	}
}

func TestLedgerPrune(t *testing.T) {
	now := time.Now()
	closedBucket := now.UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	for _, tc := range []struct {
		op        Op
		retention time.Duration
		kept      bool
	}{
		{OpSum, 0, false},             // sent keys of closed buckets are forgotten: a late point starts anew and adds up
		{OpReplace, time.Hour, false}, // kept for the retention only
		{OpReplace, 48 * time.Hour, true},
	} {
		l := newLedger(tc.op, 10)
		k, _ := record.NewKey(record.Record{Timestamp: closedBucket, Granularity: record.Hourly, ElementName: "a"})
		open, _ := record.NewKey(record.Record{Timestamp: now, Granularity: record.Hourly, ElementName: "a"})
		unsent, _ := record.NewKey(record.Record{Timestamp: closedBucket, Granularity: record.Hourly, ElementName: "b"})
		for _, key := range []record.Key{k, open, unsent} {
			id, _ := l.bind(noID, "s", key)
			l.add(id, 1, 1)
			if key != unsent {
				l.begin(id, 1)
				l.confirm(id)
			}
		}
		l.prune(now.UnixNano(), int64(settleDelay), int64(tc.retention))
		_, ok := l.lookup("s", k)
		assert.Equal(t, tc.kept, ok, "%s retention %s", tc.op, tc.retention)
		_, ok = l.lookup("s", open)
		assert.True(t, ok, "open buckets are kept")
		_, ok = l.lookup("s", unsent)
		assert.True(t, ok, "unsent keys are never pruned")
	}
}

// TestJournalReplaysExactly drives a Delivery through consumes, sends that
// succeed or fail, and compactions; after every step, a Delivery restored
// from what the storage holds at that instant (a crash) must hold the same
// ledger, bit for bit, except that requests under way become failed ones.
func TestJournalReplaysExactly(t *testing.T) {
	defer func(v int64) { compactMinBytes = v }(compactMinBytes)
	compactMinBytes = 2000 // compact often
	em := startEm(t, emulator.Config{})
	store := newMemStorage()
	d := testDelivery(t, em, func(c *DeliveryConfig) {
		c.Storage, c.FlushInterval = store, time.Hour
		c.Translator.Streams = append(c.Translator.Streams, netStream)
	})
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	for step := range 300 {
		switch r := rng.IntN(10); {
		case r < 6:
			values := map[string]float64{}
			for range 1 + rng.IntN(5) {
				values[fmt.Sprintf("c%d", rng.IntN(20))] = float64(rng.IntN(1000)) / 7
			}
			at := recent.Add(time.Duration(rng.IntN(3)) * time.Hour)
			if at.After(time.Now()) {
				at = recent
			}
			md := deltas(at, values)
			if rng.IntN(3) == 0 { // negative contributions net in the ledger, or are discarded at close
				for k := range values {
					values[k] -= 100
				}
				md = updown(at, values)
			}
			_, err := d.Consume(ctx, md)
			require.NoError(t, err)
		case r < 9:
			if rng.IntN(3) == 0 {
				require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1, Status: 503, Apply: rng.IntN(2) == 0}}}))
			}
			_ = d.round(ctx, selection{all: true}, time.Now().UnixNano())
		default:
			d.compact(ctx)
		}
		if step%7 == 0 {
			_ = d.round(ctx, selection{closing: true}, time.Now().UnixNano()) // discards closed non-positive keys
		}
		d.mu.Lock() // a restore forgets what a round would prune: do the same live
		d.ledger.prune(time.Now().UnixNano(), int64(settleDelay), int64(d.cfg.Translator.MaxAge))
		d.mu.Unlock()
		restored := restoreFrom(t, em, store.copy())
		assertSameLedger(t, d, restored, step)
	}
	shutdownNow(t, d)
}

// netStream sums an up-down counter, whose negative contributions net.
var netStream = translator.Stream{Name: "net", Metrics: []string{"u"}, Granularity: record.Hourly, ElementName: "customer.id", Value: translator.ValueSum}

func restoreFrom(t *testing.T, em *emulator.Instance, s *memStorage) *Delivery {
	t.Helper()
	r, err := NewDelivery(DeliveryConfig{
		Translator: translator.Settings{Streams: []translator.Stream{{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "customer.id"}, netStream}},
		Client:     NewClient(nil, em.URL, testKey), Storage: s,
	})
	require.NoError(t, err)
	r.mu.Lock()
	defer r.mu.Unlock()
	require.NoError(t, r.restore(context.Background()))
	return r
}

func assertSameLedger(t *testing.T, live, restored *Delivery, step int) {
	t.Helper()
	live.mu.Lock()
	defer live.mu.Unlock()
	l, r := live.ledger, restored.ledger
	require.Equal(t, l.live, r.live, "step %d: keys", step)
	for id := range l.entries {
		e := l.entries[id]
		if !e.live {
			continue
		}
		rid, ok := r.lookup(l.streams[e.stream], e.key)
		require.True(t, ok, "step %d: key %s lost", step, e.key)
		g := r.entries[rid]
		if e.state == stateInflight {
			e.state = stateFailed // its answer was not recorded: it goes again
		}
		assert.Equal(t, math.Float64bits(e.value), math.Float64bits(g.value), "step %d value", step)
		assert.Equal(t, math.Float64bits(e.inflight), math.Float64bits(g.inflight), "step %d inflight", step)
		assert.Equal(t, math.Float64bits(e.confirmed), math.Float64bits(g.confirmed), "step %d confirmed", step)
		assert.Equal(t, e.state, g.state, "step %d state", step)
	}
}

// Consume is all or nothing: when the journal write fails, neither the
// ledger nor the series state changes, and the same data counts once later.
func TestConsumeStorageFailureChangesNothing(t *testing.T) {
	em := startEm(t, emulator.Config{})
	store := newMemStorage()
	d := testDelivery(t, em, func(c *DeliveryConfig) { c.Storage = store; c.FlushInterval = time.Hour })
	ctx := context.Background()
	_, err := d.Consume(ctx, deltas(recent, map[string]float64{"a": 1}))
	require.NoError(t, err)
	store.failSet = func(string) error { return fmt.Errorf("disk full") }
	_, err = d.Consume(ctx, deltas(recent, map[string]float64{"a": 10, "b": 5}))
	require.ErrorContains(t, err, "disk full")
	store.failSet = nil
	_, err = d.Consume(ctx, deltas(recent, map[string]float64{"a": 10, "b": 5}))
	require.NoError(t, err)
	shutdownNow(t, d)
	assert.Equal(t, "16", total(em.Ledger(), "s"))
}

// A 400 is bisected down to the records CloudZero refuses; the others are
// delivered, each once.
func TestBadRequestIsBisected(t *testing.T) {
	em := startEm(t, emulator.Config{MaxRecordBytes: 200})
	var bisected int
	d := testDelivery(t, em, func(c *DeliveryConfig) {
		c.Observer.Bisected = func(context.Context, string) { bisected++ }
	})
	values := map[string]float64{}
	for i := range 100 {
		values[fmt.Sprintf("c%03d", i)] = 1
	}
	values[strings.Repeat("x", 300)] = 1000 // over the emulator's record limit
	values[strings.Repeat("y", 300)] = 1000
	_, err := d.Consume(context.Background(), deltas(recent, values))
	require.NoError(t, err)
	shutdownNow(t, d)
	l := em.Ledger()
	assert.Equal(t, "100", total(l, "s"))
	assert.EqualValues(t, 100, l.RecordsAccepted, "each good record once")
	assert.Positive(t, bisected)
	assert.Less(t, l.RequestsByStatus["400"], int64(30), "two bad records cost a few requests, not one per record")
}

// A stream whose records CloudZero refuses one and all is bisected to the
// last record: every record is dropped (and counted) only once refused
// alone, at about two requests per record, none of them charged to the
// daily budget.
func TestRefusedStreamIsDroppedRecordByRecord(t *testing.T) {
	var dropped int
	em := startEm(t, emulator.Config{MaxRecordBytes: 50}) // every record is longer
	limiter := NewLimiter(LimiterConfig{RecordsPerDay: 1_000_000})
	d := testDelivery(t, em, func(c *DeliveryConfig) {
		c.Limiter = limiter
		c.Observer.Dropped = func(_ context.Context, _, reason string, n int, _ float64) {
			assert.Equal(t, "status_400", reason)
			dropped += n
		}
	})
	values := map[string]float64{}
	for i := range 300 {
		values[fmt.Sprintf("c%04d", i)] = 1
	}
	_, err := d.Consume(context.Background(), deltas(recent, values))
	require.NoError(t, err)
	require.NoError(t, d.Flush(context.Background()))
	shutdownNow(t, d)
	l := em.Ledger()
	assert.Equal(t, 300, dropped, "every record dropped, and counted")
	// A full bisection, 2n-1 requests, plus one request of what is left each
	// time it goes on in the next round (every 256 requests).
	assert.InDelta(t, 2*300, l.RequestsByStatus["400"], 10)
	left, _ := limiter.BudgetLeft()
	assert.Equal(t, 1_000_000, left, "refused requests go back to the budget")
}

// replace on a stream that does not exist yet: sent once with sum (the
// stream holds nothing), replace afterwards; exact either way.
func TestReplaceCreatesMissingStreamWithSum(t *testing.T) {
	em := startEm(t, emulator.Config{ReplaceRequiresStream: true})
	store := newMemStorage()
	d := testDelivery(t, em, func(c *DeliveryConfig) { c.Op = OpReplace; c.Storage = store })
	ctx := context.Background()
	_, err := d.Consume(ctx, deltas(recent, map[string]float64{"a": 2, "b": 3}))
	require.NoError(t, err)
	require.NoError(t, d.Flush(ctx))
	_, err = d.Consume(ctx, deltas(recent, map[string]float64{"a": 5}))
	require.NoError(t, err)
	require.NoError(t, d.Flush(ctx))
	shutdownNow(t, d)
	l := em.Ledger()
	assert.Equal(t, "10", total(l, "s"), "a=7, b=3")
	assert.Positive(t, l.RequestsByRoute[emulator.RouteSum]["200"], "the first send created the stream with sum")
	assert.Positive(t, l.RequestsByRoute[emulator.RouteReplace]["200"], "later sends replace")
}

// With replace, requests CloudZero applied but answered with 503 are sent
// again with the same total: nothing counts twice.
func TestReplaceAmbiguousFailuresDoNotDuplicate(t *testing.T) {
	em := startEm(t, emulator.Config{})
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Repeat: true, Steps: []emulator.FaultStep{{Count: 1, Status: 503, Apply: true}, {Count: 1}}}))
	d := testDelivery(t, em, func(c *DeliveryConfig) { c.Op = OpReplace; c.Storage = newMemStorage(); c.FlushInterval = time.Second })
	ctx := context.Background()
	want := 0.0
	for i := range 20 {
		_, err := d.Consume(ctx, deltas(recent, map[string]float64{"a": float64(i), "b": 1}))
		require.NoError(t, err)
		want += float64(i) + 1
		time.Sleep(50 * time.Millisecond)
	}
	shutdownNow(t, d)
	l := em.Ledger()
	assert.Positive(t, l.AmbiguousAppliedRequests)
	assert.Equal(t, fmt.Sprint(want), total(l, "s"))
}

// Without storage, what shutdown cannot deliver before its timeout is
// dropped, counted with its units.
func TestShutdownWithoutStorageCountsWhatIsLost(t *testing.T) {
	em := startEm(t, emulator.Config{})
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Repeat: true, Steps: []emulator.FaultStep{{Count: 1, Status: 503}}}))
	var records int
	var units float64
	d := testDelivery(t, em, func(c *DeliveryConfig) {
		c.ShutdownTimeout = 500 * time.Millisecond
		c.Observer.Dropped = func(_ context.Context, _, reason string, n int, u float64) {
			assert.Equal(t, "shutdown", reason)
			records, units = records+n, units+u
		}
	})
	_, err := d.Consume(context.Background(), deltas(recent, map[string]float64{"a": 2, "b": 3}))
	require.NoError(t, err)
	start := time.Now()
	shutdownNow(t, d)
	assert.Less(t, time.Since(start), 5*time.Second, "shutdown keeps to its timeout")
	assert.Equal(t, 2, records)
	assert.Equal(t, 5.0, units)
	assert.Equal(t, "0", total(em.Ledger(), "s"))
}

// With storage, what shutdown could not deliver is sent at the next start.
func TestShutdownWithStorageKeepsTheRest(t *testing.T) {
	em := startEm(t, emulator.Config{})
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Repeat: true, Steps: []emulator.FaultStep{{Count: 1, Status: 503}}}))
	store := newMemStorage()
	d := testDelivery(t, em, func(c *DeliveryConfig) { c.Storage = store; c.ShutdownTimeout = 300 * time.Millisecond })
	_, err := d.Consume(context.Background(), deltas(recent, map[string]float64{"a": 2, "b": 3}))
	require.NoError(t, err)
	shutdownNow(t, d)
	assert.True(t, store.closed)
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{}))
	d = testDelivery(t, em, func(c *DeliveryConfig) { c.Storage = store.copy() })
	shutdownNow(t, d)
	assert.Equal(t, "5", total(em.Ledger(), "s"))
	assert.Zero(t, em.Ledger().AmbiguousAppliedRequests)
}

// Compaction keeps the log bounded: old log records and snapshots go.
func TestCompactionDropsOldLog(t *testing.T) {
	defer func(v int64) { compactMinBytes = v }(compactMinBytes)
	compactMinBytes = 500
	em := startEm(t, emulator.Config{})
	store := newMemStorage()
	d := testDelivery(t, em, func(c *DeliveryConfig) { c.Storage = store; c.FlushInterval = time.Hour })
	ctx := context.Background()
	for i := range 200 {
		_, err := d.Consume(ctx, deltas(recent, map[string]float64{fmt.Sprintf("c%d", i%10): 1}))
		require.NoError(t, err)
	}
	require.NoError(t, d.Flush(ctx)) // the flusher compacts after a round, and when Consume asks
	d.compact(ctx)
	// A compaction comes once the log outgrows the snapshot (~2 KB here, ~50
	// consume records): of the 200+ records written, only the last ones stay.
	assert.Less(t, store.keys("wal/"), 80, "the log before the snapshot is deleted")
	assert.Positive(t, store.keys("snap/"), "compacted")
	assert.LessOrEqual(t, store.keys("snap/"), 2, "one snapshot (translator state and one chunk)")
	shutdownNow(t, d)
	assert.Equal(t, "200", total(em.Ledger(), "s"))
}

func TestMaxKeys(t *testing.T) {
	em := startEm(t, emulator.Config{})
	d := testDelivery(t, em, func(c *DeliveryConfig) { c.MaxKeys = 2; c.FlushInterval = time.Hour })
	ctx := context.Background()
	_, err := d.Consume(ctx, deltas(recent, map[string]float64{"a": 1, "b": 1}))
	require.NoError(t, err)
	_, err = d.Consume(ctx, deltas(recent, map[string]float64{"a": 1, "c": 1}))
	require.ErrorIs(t, err, ErrLedgerFull, "a new key beyond max_keys refuses the whole export")
	_, err = d.Consume(ctx, deltas(recent, map[string]float64{"a": 1, "b": 1}))
	require.NoError(t, err, "existing keys keep accepting")
	shutdownNow(t, d)
	assert.Equal(t, "4", total(em.Ledger(), "s"))
}

func TestOpenAllowance(t *testing.T) {
	noon := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name                                string
		left                                int
		limited                             bool
		closedNow, hourlyOpen, changed, out int
	}{
		{"no budget: all", 0, false, 0, 5000, 5000, 5000},
		{"plenty: all", 1_000_000, true, 0, 1000, 1000, 1000},
		// 12h left: 12 closings of 5,000 keys reserved (60,000); 144 rounds of 5m.
		{"rationed", 200_000, true, 0, 5000, 5000, (200_000 - 60_000) / 144},
		{"closings take it all", 50_000, true, 0, 5000, 5000, 0},
		{"closed keys first", 60_100, true, 100, 5000, 5000, 0},
	}
	for _, tt := range tests {
		got := openAllowance(tt.left, tt.limited, noon, 5*time.Minute, tt.closedNow, tt.hourlyOpen, tt.changed)
		assert.Equal(t, tt.out, got, tt.name)
	}
}

// Flush sends what the ledger holds at once, whatever flush_interval says.
func TestFlush(t *testing.T) {
	em := startEm(t, emulator.Config{})
	d := testDelivery(t, em, func(c *DeliveryConfig) { c.FlushInterval = time.Hour })
	_, err := d.Consume(context.Background(), deltas(recent, map[string]float64{"a": 1.5}))
	require.NoError(t, err)
	require.NoError(t, d.Flush(context.Background()))
	assert.Equal(t, "1.5", total(em.Ledger(), "s"))
	shutdownNow(t, d)
	assert.ErrorIs(t, d.Flush(context.Background()), ErrStopped)
	_, err = d.Consume(context.Background(), deltas(recent, map[string]float64{"a": 1}))
	assert.ErrorIs(t, err, ErrStopped)
}

func TestReplaceNeedsStorage(t *testing.T) {
	_, err := NewDelivery(DeliveryConfig{Op: OpReplace, Client: NewClient(nil, "http://127.0.0.1:1", "k")})
	assert.ErrorContains(t, err, "replace needs storage")
}

// A stored ledger this version cannot read stops Start with a message that
// says what to do, and Shutdown then leaves the storage as it was.
func TestUnreadableStorageIsNeverOverwritten(t *testing.T) {
	store := newMemStorage()
	store.m["head"] = []byte("not a head")
	d, err := NewDelivery(DeliveryConfig{
		Translator: translator.Settings{Streams: []translator.Stream{{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "customer.id"}}},
		Client:     NewClient(nil, "http://127.0.0.1:1", testKey), Storage: store,
	})
	require.NoError(t, err)
	err = d.Start(context.Background())
	require.ErrorContains(t, err, "move the storage directory away")
	require.NoError(t, d.Shutdown(context.Background()))
	assert.Equal(t, "not a head", string(store.m["head"]))
	assert.Len(t, store.m, 1)
}

// cumulative builds one point of the cumulative sum "m" for element a.
func cumulative(start, ts time.Time, v float64) pmetric.Metrics {
	return cumulativeOf("a", start, ts, v)
}

// An exporter down for longer than series.ttl keeps its cumulative series:
// their TTL counts the time it ran, so the usage of the outage is counted
// by the first point after the restart, not lost to a new baseline.
func TestDowntimeLongerThanTheSeriesTTL(t *testing.T) {
	em := startEm(t, emulator.Config{})
	store := newMemStorage()
	var mu sync.Mutex
	now := time.Now().Add(-4 * time.Hour)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	withClock := func(c *DeliveryConfig) {
		c.Storage, c.Now, c.Translator.Now, c.Translator.SeriesTTL = store, clock, clock, time.Hour
	}
	start := now.Add(-time.Hour) // before the exporter: the first point is a baseline
	d := testDelivery(t, em, withClock)
	ctx := context.Background()
	_, err := d.Consume(ctx, cumulative(start, now, 100))
	require.NoError(t, err)
	_, err = d.Consume(ctx, cumulative(start, now.Add(time.Second), 110))
	require.NoError(t, err)
	shutdownNow(t, d)

	mu.Lock()
	now = now.Add(3 * time.Hour) // down for three TTLs
	mu.Unlock()
	store = store.copy()
	d = testDelivery(t, em, withClock)
	_, err = d.Consume(ctx, cumulative(start, now, 150))
	require.NoError(t, err)
	shutdownNow(t, d)
	assert.Equal(t, "50", total(em.Ledger(), "s"), "100 -> 150: +10 before the outage, +40 counted after it")
}

// A key whose bucket has not started yet (a point from a clock running
// ahead, just after an hour boundary) is sent only once the bucket started:
// CloudZero refuses timestamps in the future.
func TestBucketNotStartedIsNotSent(t *testing.T) {
	var mu sync.Mutex
	now := time.Now().UTC().Truncate(time.Hour).Add(-30 * time.Second) // 30 s before an hour
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	em := startEm(t, emulator.Config{Now: clock})
	d := testDelivery(t, em, func(c *DeliveryConfig) { c.Now, c.Translator.Now, c.FlushInterval = clock, clock, time.Hour })
	ctx := context.Background()
	next := now.Add(30 * time.Second)
	_, err := d.Consume(ctx, deltas(next.Add(10*time.Second), map[string]float64{"a": 2})) // 40 s ahead
	require.NoError(t, err)
	require.NoError(t, d.Flush(ctx))
	l := em.Ledger()
	assert.Zero(t, l.RequestsByStatus["400"]+l.RequestsByStatus["200"], "nothing sent before the bucket starts")
	mu.Lock()
	now = next.Add(time.Second)
	mu.Unlock()
	require.NoError(t, d.Flush(ctx))
	shutdownNow(t, d)
	assert.Equal(t, "2", total(em.Ledger(), "s"))
}

// updown builds one delta up-down counter point of metric "u" per element.
func updown(ts time.Time, values map[string]float64) pmetric.Metrics {
	md := deltas(ts, values)
	m := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0)
	m.SetName("u")
	m.Sum().SetIsMonotonic(false)
	return md
}

// Translator edges, item 3: with value: sum on an up-down counter, +5 and -3
// net to 2 whether they come in one export or two: netting happens per key
// and bucket in the ledger, before anything is sent. A key whose bucket
// closes with a net that is not > 0 is dropped (non_positive) with its units.
func TestNegativeContributionsNetPerKeyAndBucket(t *testing.T) {
	em := startEm(t, emulator.Config{})
	var mu sync.Mutex
	now := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour).Add(20 * time.Minute)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var dropped int
	var droppedUnits float64
	d := testDelivery(t, em, func(c *DeliveryConfig) {
		c.Now, c.Translator.Now, c.FlushInterval = clock, clock, time.Hour
		c.Translator.Streams = []translator.Stream{{Name: "s", Metrics: []string{"u"}, Granularity: record.Hourly, ElementName: "customer.id", Value: translator.ValueSum}}
		c.Observer.Dropped = func(_ context.Context, _, reason string, n int, units float64) {
			assert.Equal(t, "non_positive", reason)
			dropped, droppedUnits = dropped+n, droppedUnits+units
		}
	})
	ctx := context.Background()
	at := now.Add(-10 * time.Minute)
	for _, md := range []pmetric.Metrics{
		updown(at, map[string]float64{"one-export": 5}), // +5 -3 in two exports
		updown(at, map[string]float64{"one-export": -3, "net-negative": 2}),
		updown(at, map[string]float64{"net-negative": -5}),
	} {
		_, err := d.Consume(ctx, md)
		require.NoError(t, err)
	}
	mu.Lock()
	now = now.Add(time.Hour) // the bucket closed
	mu.Unlock()
	require.NoError(t, d.round(ctx, selection{closing: true}, clock().UnixNano()))
	shutdownNow(t, d)
	l := em.Ledger()
	assert.Equal(t, "2", total(l, "s"), "+5 -3 = 2; the net-negative key is not sent")
	assert.Equal(t, 1, dropped)
	assert.Equal(t, 3.0, droppedUnits)
	assert.Zero(t, l.RequestsByStatus["400"])
}

// With storage, the exporter's start is when it first started on that
// storage: a cumulative series that started while it was down counts in
// full at its first point after the restart, since nobody counted it.
func TestSeriesStartedWhileDownCountsInFull(t *testing.T) {
	em := startEm(t, emulator.Config{})
	store := newMemStorage()
	var mu sync.Mutex
	now := time.Now().Add(-2 * time.Hour)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	withClock := func(c *DeliveryConfig) { c.Storage, c.Now, c.Translator.Now = store, clock, clock }
	d := testDelivery(t, em, withClock)
	shutdownNow(t, d)

	downAt := now
	mu.Lock()
	now = now.Add(30 * time.Minute) // the restart
	mu.Unlock()
	store = store.copy()
	d = testDelivery(t, em, withClock)
	_, err := d.Consume(context.Background(), cumulative(downAt.Add(10*time.Minute), now.Add(-time.Second), 40))
	require.NoError(t, err)
	shutdownNow(t, d)
	assert.Equal(t, "40", total(em.Ledger(), "s"))
}

// AddRecords: records given as such reach CloudZero as given, merged by
// key, with both operations; replace without storage when the totals are
// given; a journaled AddRecords replays like a Consume.
func TestAddRecords(t *testing.T) {
	keyOf := func(el string, at time.Time) record.Key {
		k, err := record.NewKey(record.Record{Timestamp: at, Granularity: record.Hourly, ElementName: el})
		require.NoError(t, err)
		return k
	}
	old := recent.Truncate(time.Hour).Add(-72 * time.Hour) // a backfill: older than any open bucket
	set := record.NewSet()
	set.Add("s", keyOf("a", recent.Truncate(time.Hour)), 2)
	set.Add("s", keyOf("a", recent.Truncate(time.Hour)), 3)
	set.Add("s", keyOf("b", old), 7)
	set.Add("t", keyOf("a", old), 1.5)
	for _, op := range []Op{OpSum, OpReplace} {
		t.Run(string(op), func(t *testing.T) {
			em := startEm(t, emulator.Config{})
			store := newMemStorage()
			d := testDelivery(t, em, func(c *DeliveryConfig) { c.Op, c.TotalsGiven, c.Storage = op, true, store })
			faults := []emulator.FaultStep{{Count: 2, Status: 503}, {Count: 1, Status: 429}}
			if op == OpReplace { // an applied 503 is harmless only to replace
				faults = append(faults, emulator.FaultStep{Count: 1, Status: 503, Apply: true})
			}
			require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: faults}))
			require.NoError(t, d.AddRecords(context.Background(), set))
			restored := restoreFrom(t, em, store.copy())
			assertSameLedger(t, d, restored, 0)
			shutdownNow(t, restored)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, d.Flush(ctx))
			shutdownNow(t, d)
			l := em.Ledger()
			assert.Equal(t, "12", total(l, "s"))
			assert.Equal(t, "1.5", total(l, "t"))
			met := 0
			for _, f := range faults {
				met += f.Count
			}
			assert.EqualValues(t, met, l.RequestsByStatus["503"]+l.RequestsByStatus["429"], "every fault was met")
		})
	}
	t.Run("replace needs storage unless the totals are given", func(t *testing.T) {
		_, err := NewDelivery(DeliveryConfig{Op: OpReplace, Client: NewClient(nil, "http://127.0.0.1:1", testKey)})
		require.ErrorContains(t, err, "replace needs storage")
		_, err = NewDelivery(DeliveryConfig{Op: OpReplace, TotalsGiven: true, Client: NewClient(nil, "http://127.0.0.1:1", testKey)})
		require.NoError(t, err)
	})
}
