package exporter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

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
