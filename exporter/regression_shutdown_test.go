package exporter

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

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
