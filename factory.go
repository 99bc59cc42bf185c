//go:generate bash scripts/mdatagen.sh

package cloudzeroexporter // import "github.com/cloudzero-otel/cloudzeroexporter"

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/confighttp"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/metadata"
)

// Defaults. The rate limits are those of CloudZero's telemetry documentation
// (300,000 records per minute, 1,000,000 per day); see cloudzero-api.md.
const (
	defaultEndpoint             = "https://api.cloudzero.com"
	defaultTimeout              = 30 * time.Second
	defaultGranularity          = "HOURLY"
	defaultRecordsPerSecond     = 5000
	defaultBurst                = 300_000
	defaultRecordsPerDay        = 1_000_000
	defaultMaxRecordsPerRequest = 5000
	maxRecordsPerRequestLimit   = 10_000
	defaultMaxSeries            = 100_000
	defaultSeriesTTL            = time.Hour
	defaultMaxPointAge          = 7 * 24 * time.Hour
	defaultMaxFutureSkew        = 5 * time.Minute
	// defaultFlushTimeout bounds how long records wait and merge by key
	// before they are sent. Sending every key once per 5 minutes keeps a
	// HOURLY stream at 12 sends per key and hour, well within the daily budget
	// for thousands of keys, while data stays at most minutes behind.
	defaultFlushTimeout = 5 * time.Minute
	defaultBatchMinSize = 50_000
	// defaultQueueSize is in records (the items sizer), so that the queue's
	// memory is bounded by records whatever the size of each export: about
	// 250 bytes a record, 50 MB when full. When full, ConsumeMetrics refuses
	// data and the translator's state does not advance, so cumulative usage
	// is counted at the next point instead of lost.
	defaultQueueSize = 200_000
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

	queue := exporterhelper.NewDefaultQueueConfig()
	queue.Sizer = exporterhelper.RequestSizerTypeItems
	queue.QueueSize = defaultQueueSize
	batch := exporterhelper.NewDefaultBatchConfig()
	batch.FlushTimeout = defaultFlushTimeout
	batch.MinSize = defaultBatchMinSize
	queue.Batch = configoptional.Some(batch)

	return &Config{
		ClientConfig:  client,
		QueueConfig:   configoptional.Some(queue),
		BackOffConfig: configretry.NewDefaultBackOffConfig(),
		Granularity:   defaultGranularity,
		RateLimit: RateLimitConfig{
			RecordsPerSecond: defaultRecordsPerSecond,
			Burst:            defaultBurst,
			RecordsPerDay:    defaultRecordsPerDay,
		},
		MaxRecordsPerRequest: defaultMaxRecordsPerRequest,
		Series:               SeriesConfig{MaxSeries: defaultMaxSeries, TTL: defaultSeriesTTL},
		MaxPointAge:          defaultMaxPointAge,
		MaxFutureSkew:        defaultMaxFutureSkew,
	}
}

func createMetrics(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Metrics, error) {
	return newMetricsExporter(ctx, set, cfg.(*Config))
}
