package exporter

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

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
