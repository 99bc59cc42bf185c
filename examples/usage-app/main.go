// Command usage-app is an example service that emits per-customer usage with the
// OpenTelemetry SDK, the way an existing application would, over OTLP/HTTP with
// the SDK's default (cumulative) temporality:
//
//	app.requests          Counter        {customer.id, feature}   requests served
//	app.active_sessions   UpDownCounter  {customer.id}            sessions open now
//	app.request.duration  Histogram (s)  {customer.id, feature}   request latency
//
// It knows nothing about CloudZero: the collector's cloudzero exporter maps these
// metrics onto allocation streams (see demo/collector.yaml).
//
// The workload is deterministic from -seed, -customers and -duration (one tick of
// 5 to 15 requests every 100ms). On exit it shuts the MeterProvider down, which
// exports the final cumulative values, and prints a JSON summary of exactly what
// it recorded, to compare with what CloudZero received.
//
//	usage-app [-endpoint 127.0.0.1:4318] [-duration 60s] [-customers 5] [-seed 1] [-interval 5s] [-summary-file F]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
)

// tickEvery is how often the workload produces a tick.
const tickEvery = 100 * time.Millisecond

func main() {
	endpoint := flag.String("endpoint", "127.0.0.1:4318", "OTLP/HTTP endpoint, host:port (plain HTTP)")
	duration := flag.Duration("duration", 60*time.Second, "how long to run")
	customers := flag.Int("customers", 5, "number of customers")
	seed := flag.Uint64("seed", 1, "workload seed")
	interval := flag.Duration("interval", 5*time.Second, "metric export interval")
	summaryFile := flag.String("summary-file", "", "write the JSON summary here instead of stdout")
	flag.Parse()
	log.SetPrefix("usage-app: ")
	if *customers < 1 || *duration <= 0 || *interval <= 0 {
		log.Fatal("-customers, -duration and -interval must be positive")
	}

	// Shutdown cancels a periodic export that is under way (the final export
	// that follows carries the same cumulative values): do not report that one.
	var shuttingDown atomic.Bool
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		if !shuttingDown.Load() || !errors.Is(err, context.Canceled) {
			log.Print(err)
		}
	}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	exp, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpoint(*endpoint), otlpmetrichttp.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(*interval))),
		sdkmetric.WithResource(resource.NewSchemaless(attribute.String("service.name", "usage-app"))),
	)

	ticks := int(*duration / tickEvery)
	log.Printf("sending to %s every %s: %d customers, seed %d, %d ticks of %s", *endpoint, *interval, *customers, *seed, ticks, tickEvery)
	sum, err := run(ctx, mp.Meter("usage-app"), NewWorkload(*customers, *seed), ticks, tickEvery, os.Stderr)
	if err != nil {
		log.Fatal(err)
	}

	// Shutdown collects and exports one last time: the final cumulative values.
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shuttingDown.Store(true)
	shutdownErr := mp.Shutdown(sctx)
	if shutdownErr != nil {
		log.Printf("final export failed, the collector may not have everything in the summary: %v", shutdownErr)
	}

	out := io.Writer(os.Stdout)
	if *summaryFile != "" {
		f, err := os.Create(*summaryFile)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		out = f
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(sum); err != nil {
		log.Fatal(err)
	}
	log.Printf("done: %d requests in %d ticks", sum.TotalRequests, sum.Ticks)
	if shutdownErr != nil {
		os.Exit(1)
	}
}

// run plays ticks of the workload, one every `every` (0: as fast as possible),
// records them with meter and returns the summary of what it recorded. It stops
// early, without error, when ctx ends. Progress goes to logw every 10 seconds.
func run(ctx context.Context, meter metric.Meter, w *Workload, ticks int, every time.Duration, logw io.Writer) (*Summary, error) {
	requests, err := meter.Int64Counter("app.requests",
		metric.WithUnit("{request}"), metric.WithDescription("Requests served"))
	if err != nil {
		return nil, err
	}
	sessions, err := meter.Int64UpDownCounter("app.active_sessions",
		metric.WithUnit("{session}"), metric.WithDescription("Sessions open now"))
	if err != nil {
		return nil, err
	}
	latency, err := meter.Float64Histogram("app.request.duration",
		metric.WithUnit("s"), metric.WithDescription("Request duration"),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
	if err != nil {
		return nil, err
	}

	sum := newSummary(w.seed, len(w.Customers))
	start := time.Now()
	sum.Started = start.UTC().Format(time.RFC3339Nano)
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	wait := func() bool { // false when ctx ended
		if tick == nil {
			return ctx.Err() == nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick:
			return true
		}
	}
	lastLog := start
	for i := 0; i < ticks && wait(); i++ {
		t := w.Next()
		for _, r := range t.Requests {
			attrs := metric.WithAttributes(attribute.String("customer.id", r.Customer), attribute.String("feature", r.Feature))
			requests.Add(ctx, 1, attrs)
			latency.Record(ctx, r.Seconds(), attrs)
		}
		for c, d := range t.SessionDeltas {
			if d != 0 {
				sessions.Add(ctx, d, metric.WithAttributes(attribute.String("customer.id", w.Customers[c])))
			}
		}
		sum.add(w, t)
		if now := time.Now(); logw != nil && now.Sub(lastLog) >= 10*time.Second {
			lastLog = now
			fmt.Fprintf(logw, "usage-app: %s: %d requests recorded\n", now.Sub(start).Round(time.Second), sum.TotalRequests)
		}
	}
	sum.Finished = time.Now().UTC().Format(time.RFC3339Nano)
	return sum, nil
}
