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
