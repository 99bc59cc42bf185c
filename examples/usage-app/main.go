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
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/cloudzero-otel/cloudzeroexporter/examples/internal/workload"
)

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

	ticks := int(*duration / workload.TickEvery)
	log.Printf("sending to %s every %s: %d customers, seed %d, %d ticks of %s", *endpoint, *interval, *customers, *seed, ticks, workload.TickEvery)
	sum, err := workload.Run(ctx, mp.Meter("usage-app"), workload.New(*customers, *seed), ticks, workload.TickEvery, os.Stderr)
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
