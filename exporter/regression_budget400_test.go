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
