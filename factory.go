//go:generate bash scripts/mdatagen.sh

package cloudzeroexporter // import "github.com/cloudzero-otel/cloudzeroexporter"

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/confighttp"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/exporter"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/metadata"
)

// Defaults. The rate limits are those of CloudZero's telemetry documentation
// (300,000 records per minute, 1,000,000 per day); see cloudzero-api.md.
const (
	defaultEndpoint         = "https://api.cloudzero.com"
	defaultTimeout          = 30 * time.Second
	defaultGranularity      = "HOURLY"
	defaultRecordsPerSecond = 5000
	defaultBurst            = 300_000
	defaultRecordsPerDay    = 1_000_000
	defaultMaxSeries        = 100_000
	defaultSeriesTTL        = time.Hour
	defaultMaxPointAge      = 7 * 24 * time.Hour
	defaultMaxFutureSkew    = 5 * time.Minute
)

// NewFactory creates a factory for the cloudzero exporter.
func NewFactory() exporter.Factory {
	return exporter.NewFactory(
		metadata.Type,
		createDefaultConfig,
		exporter.WithMetrics(createMetrics, metadata.MetricsStability),
	)
}

func createDefaultConfig() component.Config {
	client := confighttp.NewDefaultClientConfig()
	client.Endpoint = defaultEndpoint
	client.Timeout = defaultTimeout

	// Retries start soon and never end while the collector runs (unsent
	// usage waits in the ledger, merging); max_elapsed_time must stay 0.
	retry := configretry.NewDefaultBackOffConfig()
	retry.InitialInterval = time.Second
	retry.MaxElapsedTime = 0

	return &Config{
		ClientConfig:  client,
		BackOffConfig: retry,
		Granularity:   defaultGranularity,
		RateLimit: RateLimitConfig{
			RecordsPerSecond: defaultRecordsPerSecond,
			Burst:            defaultBurst,
			RecordsPerDay:    defaultRecordsPerDay,
		},
		MaxRecordsPerRequest: czexporter.DefaultMaxRecords,
		Series:               SeriesConfig{MaxSeries: defaultMaxSeries, TTL: defaultSeriesTTL},
		MaxPointAge:          defaultMaxPointAge,
		MaxFutureSkew:        defaultMaxFutureSkew,
		Delivery:             DeliverySum,
		FlushInterval:        czexporter.DefaultFlushInterval,
		ShutdownTimeout:      czexporter.DefaultShutdownTimeout,
		MaxKeys:              czexporter.DefaultMaxKeys,
	}
}

func createMetrics(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Metrics, error) {
	return newMetricsExporter(ctx, set, cfg.(*Config))
}
