package exporter

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

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
