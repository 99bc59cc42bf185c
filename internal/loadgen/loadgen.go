// Package loadgen sends per-customer usage as delta sums over OTLP/gRPC, the
// way an instrumented fleet does, for the end-to-end tests and the
// collector benchmarks: many distinct (customer, feature) keys, which
// telemetrygen (one attribute set per run) cannot produce.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Config describes the load.
type Config struct {
	Endpoint  string // host:port of an OTLP/gRPC receiver
	Metric    string // metric name (a monotonic delta sum)
	Customers int    // distinct customer.id values
	Features  int    // distinct feature values per customer
	Points    int    // data points in all
	// PointsPerRequest per export request (default 1000).
	PointsPerRequest int
	// Workers send requests concurrently (default 2).
	Workers int
	// MaxRetries of one request the receiver refuses (default 10): an OTLP
	// client retries retryable refusals.
	MaxRetries int
}

// Key is one (customer, feature) pair.
type Key struct{ Customer, Feature string }

// Result is what was sent.
type Result struct {
	Totals   map[Key]int64 // units per key, of the requests the receiver accepted
	Points   int           // points accepted
	Refused  int           // refusals (each retried)
	Requests int
	Elapsed  time.Duration
}

// Point i carries 1 + i%7 units for key i mod (customers × features).
func value(i int) int64 { return 1 + int64(i%7) }

// Run sends the load and returns what the receiver accepted. Every point
// has the current time as its timestamp.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.PointsPerRequest <= 0 {
		cfg.PointsPerRequest = 1000
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = 10
	}
	if cfg.Customers <= 0 || cfg.Features <= 0 || cfg.Points <= 0 || cfg.Metric == "" {
		return Result{}, errors.New("loadgen: customers, features, points and metric are required")
	}
	conn, err := grpc.NewClient(cfg.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	client := pmetricotlp.NewGRPCClient(conn)

	keys := make([]Key, 0, cfg.Customers*cfg.Features)
	for c := range cfg.Customers {
		for f := range cfg.Features {
			keys = append(keys, Key{fmt.Sprintf("customer-%05d", c), fmt.Sprintf("feature-%d", f)})
		}
	}
	res := Result{Totals: make(map[Key]int64, len(keys))}
	var mu sync.Mutex
	next := make(chan int) // first point of each request
	errs := make(chan error, cfg.Workers)
	start := time.Now()
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Go(func() {
			for first := range next {
				n := min(cfg.PointsPerRequest, cfg.Points-first)
				refused, err := send(ctx, client, cfg, keys, first, n)
				mu.Lock()
				res.Refused += refused
				res.Requests++
				if err == nil {
					res.Points += n
					for i := first; i < first+n; i++ {
						res.Totals[keys[i%len(keys)]] += value(i)
					}
				}
				mu.Unlock()
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var sendErr error
feed:
	for first := 0; first < cfg.Points; first += cfg.PointsPerRequest {
		select {
		case next <- first:
		case sendErr = <-errs:
			break feed
		case <-ctx.Done():
			sendErr = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if sendErr == nil {
		select {
		case sendErr = <-errs:
		default:
		}
	}
	res.Elapsed = time.Since(start)
	return res, sendErr
}

// send exports points [first, first+n), retrying retryable refusals.
func send(ctx context.Context, client pmetricotlp.GRPCClient, cfg Config, keys []Key, first, n int) (refused int, err error) {
	req := pmetricotlp.NewExportRequestFromMetrics(build(cfg.Metric, keys, first, n))
	for attempt := 0; ; attempt++ {
		_, err := client.Export(ctx, req)
		if err == nil {
			return refused, nil
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.ResourceExhausted || attempt >= cfg.MaxRetries {
			return refused, fmt.Errorf("loadgen: export refused: %w", err)
		}
		refused++
		select {
		case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
		case <-ctx.Done():
			return refused, ctx.Err()
		}
	}
}

func build(metric string, keys []Key, first, n int) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "loadgen")
	m := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName(metric)
	sum := m.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	now := time.Now()
	ts, startTS := pcommon.NewTimestampFromTime(now), pcommon.NewTimestampFromTime(now.Add(-time.Second))
	dps := sum.DataPoints()
	dps.EnsureCapacity(n)
	for i := first; i < first+n; i++ {
		k := keys[i%len(keys)]
		dp := dps.AppendEmpty()
		dp.SetStartTimestamp(startTS)
		dp.SetTimestamp(ts)
		dp.SetIntValue(value(i))
		dp.Attributes().PutStr("customer.id", k.Customer)
		dp.Attributes().PutStr("feature", k.Feature)
	}
	return md
}
