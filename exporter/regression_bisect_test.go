package exporter

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
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
