package exporter

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

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
