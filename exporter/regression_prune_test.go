package exporter

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

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
