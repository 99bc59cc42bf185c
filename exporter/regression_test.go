package exporter

// Regressions found in review of the delivery core, one test each.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// Regression (found in review): the bisection's give-up rule (sender.go bisection.givesUp, used
// in split) fires after 16 single-record refusals with the same answer and
// no acceptance *so far*. Bisection is depth-first, so 16 bad records at the
// start of a request are refused before any good record was tried: the
// rule then drops every remaining record of the request unsent, although
// CloudZero accepts them (the stream is not refused). Issue 8: "A 400 is
// bisected down to the records CloudZero refuses; only those are dropped".
func TestBisectionKeepsValidRecordsAfterRefusedOnes(t *testing.T) {
	em := startEm(t, emulator.Config{MaxRecordBytes: 200})
	var dropped int
	d := testDelivery(t, em, func(c *DeliveryConfig) {
		c.FlushInterval = time.Hour
		c.Observer.Dropped = func(_ context.Context, _, _ string, n int, _ float64) { dropped += n }
	})
	ctx := context.Background()
	bad := map[string]float64{}
	for i := range 16 { // same length: CloudZero's answer is the same for each
		bad[fmt.Sprintf("%03d", i)+strings.Repeat("x", 300)] = 1
	}
	_, err := d.Consume(ctx, deltas(recent, bad)) // bound first: lowest entry ids, first in the request
	require.NoError(t, err)
	good := map[string]float64{}
	for i := range 84 {
		good[fmt.Sprintf("c%03d", i)] = 1
	}
	_, err = d.Consume(ctx, deltas(recent, good))
	require.NoError(t, err)
	shutdownNow(t, d)
	assert.Equal(t, "84", total(em.Ledger(), "s"), "every valid record must be delivered")
	assert.Equal(t, 16, dropped, "only the refused records are dropped")
}

// Regression (found in review): the records of a request refused with 400 are not given back to
// the budget before it is bisected (a 413 and a single refused record are),
// and every level of the bisection takes budget again for the same records.
// One bad record among 101 costs about 300 records of budget: with a budget
// of 200, half of the 100 good records wait for the next UTC day although
// CloudZero is asked to apply only 100.
func TestBisectionRefundsRefusedRequests(t *testing.T) {
	em := startEm(t, emulator.Config{MaxRecordBytes: 200})
	d := testDelivery(t, em, func(c *DeliveryConfig) {
		c.FlushInterval = time.Hour
		c.ShutdownTimeout = 500 * time.Millisecond
		c.Limiter = NewLimiter(LimiterConfig{RecordsPerDay: 200})
	})
	values := map[string]float64{}
	for i := range 100 {
		values[fmt.Sprintf("c%03d", i)] = 1
	}
	_, err := d.Consume(context.Background(), deltas(recent, values))
	require.NoError(t, err)
	_, err = d.Consume(context.Background(), deltas(recent, map[string]float64{fmt.Sprintf("%0300d", 0): 1})) // too long for the API
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = d.Flush(ctx)
	shutdownNow(t, d)
	assert.Equal(t, "100", total(em.Ledger(), "s"), "100 records to apply fit in a budget of 200")
}

// Regression (found in review): a 503 is treated both as "may have been applied" (counted as
// ambiguous, mayHaveApplied) and as "certainly changed nothing" (notApplied:
// its records are refunded to the daily budget, sender.go post default
// branch). When CloudZero did apply it, the retry sends the same records
// again on budget that was already spent: CloudZero receives more records
// in the UTC day than rate_limit.records_per_day.
func TestServiceUnavailableIsNotRefunded(t *testing.T) {
	em := startEm(t, emulator.Config{})
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1, Status: 503, Apply: true}}}))
	const budget = 10
	d := testDelivery(t, em, func(c *DeliveryConfig) {
		c.FlushInterval = time.Hour
		c.ShutdownTimeout = 500 * time.Millisecond
		c.Limiter = NewLimiter(LimiterConfig{RecordsPerDay: budget})
	})
	values := map[string]float64{}
	for i := range budget {
		values[fmt.Sprintf("c%d", i)] = 1
	}
	_, err := d.Consume(context.Background(), deltas(recent, values))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = d.Flush(ctx)
	shutdownNow(t, d)
	l := em.Ledger()
	require.EqualValues(t, 1, l.AmbiguousAppliedRequests)
	assert.LessOrEqual(t, l.RecordsAccepted, int64(budget), "records CloudZero took today exceed records_per_day")
}

// Regression (found in review): cutBody (status.go) redacts the key in the first
// maxErrorBody+len(key) bytes, then cuts at maxErrorBody. When the body
// echoes the key twice (a proxy or debug page echoing request headers), the
// first redaction shortens the text, and the start of the second,
// partially read (so unredacted) occurrence moves inside the kept 512
// bytes: part of the API key ends up in StatusError.Body, hence in errors
// and logs.
func TestNoPartialAPIKeyInErrorBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Authorization")
		w.WriteHeader(400)
		// key at 0, second key starting at 520: the read stops at 512+len(key).
		_, _ = io.WriteString(w, key+strings.Repeat("x", 520-len(key))+key+" end")
	}))
	defer srv.Close()
	err := NewClient(srv.Client(), srv.URL, testKey).Post(context.Background(), OpSum, "s", nil)
	if err == nil {
		t.Fatal("expected an error")
	}
	for n := 8; n <= len(testKey); n++ {
		if strings.Contains(err.Error(), testKey[:n]) {
			t.Fatalf("the first %d characters of the API key are in the error: %v", n, err)
		}
	}
}

// Review tests: each one fails on the code under review and states the
// behaviour the README / issue 8 promise.

// rtFunc is an http.RoundTripper from a function.
type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// restoredWith is restoreFrom with a client of our choosing: a Delivery
// restored from s, whose flusher is not running (the test drives rounds).
func restoredWith(t *testing.T, c *Client, s *memStorage, mod func(*DeliveryConfig)) *Delivery {
	t.Helper()
	cfg := DeliveryConfig{
		Translator: translator.Settings{Streams: []translator.Stream{{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "customer.id"}}},
		Client:     c, Storage: s,
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := NewDelivery(cfg)
	require.NoError(t, err)
	d.mu.Lock()
	defer d.mu.Unlock()
	require.NoError(t, d.restore(context.Background()))
	return d
}

// Regression (found in review): a request interrupted by a SIGKILL is turned into a failed one
// only in memory at restore (persist.go restore: l.fail is not journaled).
// When that key is sent again after the restart and that request fails too
// (or is interrupted), the journal holds two begins in a row for the entry;
// replaying the second one (ledger.begin on a stateInflight entry) keeps
// only the new units and forgets what the first request carried. A second
// SIGKILL then loses those units for good (sum mode, with storage).
func TestSecondCrashKeepsTheFirstInterruptedRequest(t *testing.T) {
	em := startEm(t, emulator.Config{})
	ctx := context.Background()

	// Process 1: counts 3 units; killed while its request is under way.
	store := newMemStorage()
	var atKill *memStorage
	killed := NewClient(&http.Client{Transport: rtFunc(func(*http.Request) (*http.Response, error) {
		atKill = store.copy() // SIGKILL now: the begin record is stored, the answer never comes
		return nil, errors.New("killed")
	})}, em.URL, testKey)
	d1 := restoredWith(t, killed, store, nil)
	_, err := d1.Consume(ctx, deltas(recent, map[string]float64{"a": 3}))
	require.NoError(t, err)
	require.Error(t, d1.round(ctx, selection{all: true}, time.Now().UnixNano()))
	require.NotNil(t, atKill)
	d1.cancel()

	// Process 2: restored (3 units waiting, its request failed), counts 2
	// more; the send of 5 is answered 503 (not applied); then SIGKILL.
	d2 := restoredWith(t, NewClient(nil, em.URL, testKey), atKill, nil)
	require.Equal(t, 3.0, d2.Stats().UnsentUnits)
	_, err = d2.Consume(ctx, deltas(recent, map[string]float64{"a": 2}))
	require.NoError(t, err)
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1, Status: 503}}}))
	require.Error(t, d2.round(ctx, selection{all: true}, time.Now().UnixNano()))
	require.Equal(t, 5.0, d2.Stats().UnsentUnits, "live: all 5 units wait")
	atKill2 := atKill.copy()
	d2.cancel()

	// Process 3: must still hold the 5 units, and deliver 5.
	d3 := restoredWith(t, NewClient(nil, em.URL, testKey), atKill2, nil)
	assert.Equal(t, 5.0, d3.Stats().UnsentUnits, "units lost by the second restart")
	require.NoError(t, d3.round(ctx, selection{all: true}, time.Now().UnixNano()))
	d3.cancel()
	assert.Equal(t, "5", total(em.Ledger(), "s"), "CloudZero must end with every unit counted")
}

// The same replay hole through a storage write error: the fail record of a
// 503 cannot be written (logged as "sent again after a restart"), the key
// is sent again with more units and the process is killed during that
// request. The restart must hold every unit (README: a failed outcome write
// means the records are sent again, at worst counted twice), not lose the
// first request's.
func TestLostFailRecordThenCrashKeepsUnits(t *testing.T) {
	em := startEm(t, emulator.Config{})
	ctx := context.Background()
	store := newMemStorage()
	var atKill *memStorage
	step := 0
	c := NewClient(&http.Client{Transport: rtFunc(func(r *http.Request) (*http.Response, error) {
		step++
		if step == 1 { // a 503; the write of its fail record then fails once
			store.failSet = func(string) error { store.failSet = nil; return errors.New("disk hiccup") }
			return &http.Response{StatusCode: 503, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
		}
		atKill = store.copy() // SIGKILL during the second request
		return nil, errors.New("killed")
	})}, em.URL, testKey)
	d := restoredWith(t, c, store, nil)
	_, err := d.Consume(ctx, deltas(recent, map[string]float64{"a": 3}))
	require.NoError(t, err)
	require.Error(t, d.round(ctx, selection{all: true}, time.Now().UnixNano()))
	_, err = d.Consume(ctx, deltas(recent, map[string]float64{"a": 2}))
	require.NoError(t, err)
	require.Error(t, d.round(ctx, selection{all: true}, time.Now().UnixNano()))
	require.NotNil(t, atKill)
	d.cancel()

	r := restoredWith(t, NewClient(nil, em.URL, testKey), atKill, nil)
	assert.Equal(t, 5.0, r.Stats().UnsentUnits, "the first request's 3 units are lost by the replay")
	r.cancel()
}

// Regression (found in review): a round stops at the first retryable error (flusher.go round:
// "if err != nil { return err }") and every retry starts again with the
// failed keys first (selectDue). One stream, or one record, that keeps
// getting a 5xx therefore blocks every other stream for as long as it
// fails: their usage is never sent, the ledger fills up to max_keys and
// the exporter then refuses new input; without storage, the
// shutdown flush stops at the same stream and drops the others' usage. Here stream "a" gets 500s; stream
// "b", which CloudZero accepts, is never delivered.
func TestOneFailingStreamDoesNotBlockTheOthers(t *testing.T) {
	em := startEm(t, emulator.Config{})
	c := NewClient(&http.Client{Timeout: 5 * time.Second, Transport: rtFunc(func(r *http.Request) (*http.Response, error) {
		if strings.Contains(r.URL.Path, "/allocation/a/") {
			return &http.Response{StatusCode: 500, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
		}
		return http.DefaultTransport.RoundTrip(r)
	})}, em.URL, testKey)
	d, err := NewDelivery(DeliveryConfig{
		Translator: translator.Settings{Streams: []translator.Stream{
			{Name: "a", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "customer.id"},
			{Name: "b", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "customer.id"},
		}},
		Backoff:         Backoff{InitialInterval: 10 * time.Millisecond, MaxInterval: 10 * time.Millisecond, Multiplier: 1},
		FlushInterval:   time.Second,
		ShutdownTimeout: 500 * time.Millisecond,
		Client:          c,
	})
	require.NoError(t, err)
	require.NoError(t, d.Start(context.Background()))
	_, err = d.Consume(context.Background(), deltas(recent, map[string]float64{"x": 2}))
	require.NoError(t, err)
	time.Sleep(3 * time.Second) // a few rounds and many retries
	assert.Equal(t, "2", total(em.Ledger(), "b"), "stream b is accepted by CloudZero and must not wait for stream a")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = d.Shutdown(ctx)
	assert.Equal(t, "2", total(em.Ledger(), "b"), "nor be dropped at shutdown (no storage) behind stream a")
}

// Regression (found in review): journal.restore (journal.go) checks that each ledger chunk of
// the current snapshot exists, but not the translator's part: a missing
// snap/<g>/t is read as nil and the restore goes on with no series state
// (persist.go restore: len(b) == 0 -> nil). The cumulative baselines are
// then silently lost (the next point of every series is a baseline, its
// usage since the last point is not counted). README: a stored ledger this
// version cannot read stops the collector at start; it is never dropped
// silently.
func TestMissingTranslatorSnapshotIsDetected(t *testing.T) {
	defer func(v int64) { compactMinBytes = v }(compactMinBytes)
	compactMinBytes = 1
	em := startEm(t, emulator.Config{})
	ctx := context.Background()
	store := newMemStorage()
	d := restoredWith(t, NewClient(nil, em.URL, testKey), store, nil)
	_, err := d.Consume(ctx, deltas(recent, map[string]float64{"a": 1}))
	require.NoError(t, err)
	d.compact(ctx)
	d.cancel()
	s := store.copy()
	require.NotNil(t, s.m["snap/1/t"], "the snapshot was written")
	delete(s.m, "snap/1/t")

	r, err := NewDelivery(DeliveryConfig{
		Translator: translator.Settings{Streams: []translator.Stream{{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "customer.id"}}},
		Client:     NewClient(nil, em.URL, testKey), Storage: s,
	})
	require.NoError(t, err)
	err = r.Start(ctx)
	if err == nil {
		_ = r.Shutdown(ctx)
	}
	assert.ErrorContains(t, err, "move the storage directory away", "a snapshot without its series state must be refused")
}

// Regression (found in review): prune (ledger.go prune, called by round) is not journaled, so a
// restart replays the log and brings back the keys pruned since the last
// snapshot whose entry ids were not reused. They count against max_keys:
// after a restart, Consume refuses new keys (ErrLedgerFull, the whole
// export) that the ledger had room for before the restart, until the first
// regular round prunes again (up to flush_interval later).
func TestRestorePrunesWhatTheLedgerPruned(t *testing.T) {
	em := startEm(t, emulator.Config{})
	ctx := context.Background()
	store := newMemStorage()
	maxKeys := func(c *DeliveryConfig) { c.MaxKeys = 2 }
	d := restoredWith(t, NewClient(nil, em.URL, testKey), store, maxKeys)
	old := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	_, err := d.Consume(ctx, deltas(old, map[string]float64{"a": 1, "x": 1}))
	require.NoError(t, err)
	require.NoError(t, d.round(ctx, selection{all: true}, time.Now().UnixNano())) // a and x are confirmed
	now := time.Now().UnixNano()
	require.NoError(t, d.round(ctx, selection{regular: true, tau: now}, now)) // and pruned
	_, err = d.Consume(ctx, deltas(recent, map[string]float64{"b": 1}))
	require.NoError(t, err)
	require.Equal(t, 1, d.Stats().OpenKeys+d.Stats().ClosedKeys, "live: one key, room for one more")
	d.cancel() // SIGKILL

	r := restoredWith(t, NewClient(nil, em.URL, testKey), store.copy(), maxKeys)
	st := r.Stats()
	assert.Equal(t, 1, st.OpenKeys+st.ClosedKeys, "the restored ledger holds the keys the live one held")
	_, err = r.Consume(ctx, deltas(recent, map[string]float64{"c": 1}))
	assert.NoError(t, err, "the ledger had room for this key before the restart")
	r.cancel()
}

// Regression (found in review): Shutdown spends ShutdownTimeout (or its ctx) on the final flush,
// and only then writes a full snapshot of the ledger (delivery.go Shutdown
// -> compactLocked, with context.Background()), bounded by neither. With a
// large ledger (README: ~190 bytes per key, ~190 MB at 1M keys) the
// snapshot is written after the time the process was given, i.e. into
// Kubernetes' grace period and SIGKILL. Here storage writes of snapshot
// keys take 300 ms each (a stand-in for a big ledger).
func TestShutdownKeepsToItsTimeoutWithStorage(t *testing.T) {
	em := startEm(t, emulator.Config{})
	store := newMemStorage()
	store.failSet = func(key string) error {
		if strings.HasPrefix(key, "snap/") {
			time.Sleep(300 * time.Millisecond)
		}
		return nil
	}
	d := testDelivery(t, em, func(c *DeliveryConfig) {
		c.Storage = store
		c.FlushInterval = time.Hour
		c.ShutdownTimeout = 200 * time.Millisecond
	})
	_, err := d.Consume(context.Background(), deltas(recent, map[string]float64{"a": 1}))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = d.Shutdown(ctx)
	took := time.Since(start)
	assert.Less(t, took, 400*time.Millisecond, "Shutdown took %s with shutdown_timeout 200ms and a ctx of 200ms", took)
}

// Regression (found in review): Consume does not check that Start restored the journal (Flush
// does). Before Start, journal.next is 0, so Consume writes wal/0 over the
// stored log record 0 of the previous run and returns nil (acknowledged);
// Start then replays the overwritten log: the previous run's unsent usage
// is gone, silently (README: a stored ledger "is never overwritten
// silently"). The Delivery is the embeddable core (the SDK exporter drives
// it too), so the order of calls is not guaranteed by the collector.
func TestConsumeBeforeStartIsRefused(t *testing.T) {
	em := startEm(t, emulator.Config{})
	ctx := context.Background()
	prev := newMemStorage()
	d1 := restoredWith(t, NewClient(nil, em.URL, testKey), prev, nil)
	_, err := d1.Consume(ctx, deltas(recent, map[string]float64{"a": 3}))
	require.NoError(t, err)
	d1.cancel() // SIGKILL: 3 units wait in storage

	d2, err := NewDelivery(DeliveryConfig{
		Translator: translator.Settings{Streams: []translator.Stream{{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "customer.id"}}},
		Client:     NewClient(nil, em.URL, testKey), Storage: prev.copy(),
	})
	require.NoError(t, err)
	_, err = d2.Consume(ctx, deltas(recent, map[string]float64{"b": 5}))
	if err != nil {
		return // refusing before Start is a correct answer
	}
	require.NoError(t, d2.Start(ctx))
	assert.Equal(t, 8.0, d2.Stats().UnsentUnits, "3 stored units of the previous run and the 5 just acknowledged")
	shutdownNow(t, d2)
	assert.Equal(t, "8", total(em.Ledger(), "s"))
}
