// Command direct-usage-app is the example app's workload (examples/usage-app:
// app.requests, app.active_sessions, app.request.duration per customer.id
// and feature) exported to CloudZero in-process with package
// cloudzerometric: no collector. It reads the cloudzero exporter's section
// of a collector config (by default the demo's, demo/collector.yaml), so
// both apps make the same records.
//
// On exit it shuts the MeterProvider down, which exports the last values
// and sends what the exporter's ledger holds, and prints a JSON summary of
// exactly what it recorded, to compare with what CloudZero received. It
// exits 1 if the shutdown could not send everything.
//
//	direct-usage-app [-config demo/collector.yaml] [-exporter cloudzero] [-storage-dir DIR]
//	    [-duration 60s] [-customers 5] [-seed 1] [-interval 5s] [-summary-file F]
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
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.uber.org/zap"

	"github.com/cloudzero-otel/cloudzeroexporter/cloudzerometric"
	"github.com/cloudzero-otel/cloudzeroexporter/examples/internal/workload"
)

func main() {
	config := flag.String("config", "demo/collector.yaml", "collector config holding the exporter's section (${env:...} expanded)")
	exporterID := flag.String("exporter", "cloudzero", "the exporter's id in that config")
	storageDir := flag.String("storage-dir", "", "keep the exporter's ledger here (needed for delivery: replace)")
	duration := flag.Duration("duration", 60*time.Second, "how long to run")
	customers := flag.Int("customers", 5, "number of customers")
	seed := flag.Uint64("seed", 1, "workload seed")
	interval := flag.Duration("interval", 5*time.Second, "metric export interval (the SDK's; sending to CloudZero follows flush_interval)")
	summaryFile := flag.String("summary-file", "", "write the JSON summary here instead of stdout")
	flag.Parse()
	log.SetPrefix("direct-usage-app: ")
	if *customers < 1 || *duration <= 0 || *interval <= 0 {
		log.Fatal("-customers, -duration and -interval must be positive")
	}

	// Shutdown cancels a periodic export under way; the final export that
	// follows carries its data (the SDK keeps it): do not report that one.
	var shuttingDown atomic.Bool
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		if !shuttingDown.Load() || !errors.Is(err, context.Canceled) {
			log.Print(err)
		}
	}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := cloudzerometric.ConfigFromCollectorFile(ctx, *config, *exporterID)
	if err != nil {
		log.Fatal(err)
	}
	logger, err := zap.NewProduction()
	if err != nil {
		log.Fatal(err)
	}
	opts := []cloudzerometric.Option{cloudzerometric.WithLogger(logger)}
	if *storageDir != "" {
		opts = append(opts, cloudzerometric.WithStorageDir(*storageDir))
	}
	exp, err := cloudzerometric.New(ctx, cfg, opts...)
	if err != nil {
		log.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(*interval))),
		sdkmetric.WithResource(resource.NewSchemaless(attribute.String("service.name", "direct-usage-app"))),
	)

	ticks := int(*duration / workload.TickEvery)
	log.Printf("exporting to %s in-process every %s (sending every %s): %d customers, seed %d, %d ticks",
		cfg.ClientConfig.Endpoint, *interval, cfg.FlushInterval, *customers, *seed, ticks)
	sum, err := workload.Run(ctx, mp.Meter("direct-usage-app"), workload.New(*customers, *seed), ticks, workload.TickEvery, os.Stderr)
	if err != nil {
		log.Fatal(err)
	}

	// Shutdown exports the last values, then sends what the ledger holds,
	// retrying for up to the exporter's shutdown_timeout.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout+10*time.Second)
	defer cancel()
	shuttingDown.Store(true)
	shutdownErr := mp.Shutdown(sctx)
	if shutdownErr != nil {
		log.Printf("shutdown: %v", shutdownErr)
	}
	_ = logger.Sync()

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
