package cloudzeroexporter

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/metadata"
)

// loadConfig decodes the named config of testdata/config.yaml over the
// defaults, as the collector does, and returns it with the decode error.
func loadConfig(t *testing.T, name string) (*Config, error) {
	t.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)
	sub, err := cm.Sub(component.NewIDWithName(metadata.Type, name).String())
	require.NoError(t, err)
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	return cfg, sub.Unmarshal(cfg)
}

func TestLoadValidConfigs(t *testing.T) {
	t.Run("minimal", func(t *testing.T) {
		cfg, err := loadConfig(t, "minimal")
		require.NoError(t, err)
		require.NoError(t, confmap.Validate(cfg))

		want := createDefaultConfig().(*Config)
		want.APIKey = "secret-key-minimal"
		want.Streams = []StreamConfig{{Name: "requests", Metrics: []string{"http.server.requests"}, ElementName: "customer.id"}}
		assert.Equal(t, want, cfg)
	})

	t.Run("full", func(t *testing.T) {
		cfg, err := loadConfig(t, "full")
		require.NoError(t, err)
		require.NoError(t, confmap.Validate(cfg))

		assert.Equal(t, "https://api.cloudzero.com", cfg.ClientConfig.Endpoint)
		assert.Equal(t, 10*time.Second, cfg.ClientConfig.Timeout)
		assert.Equal(t, configopaque.String("secret-key-full"), cfg.APIKey)
		assert.Equal(t, "DAILY", cfg.Granularity)
		assert.Equal(t, 3000, cfg.MaxRecordsPerRequest)
		assert.Equal(t, 48*time.Hour, cfg.MaxPointAge)
		assert.Equal(t, time.Minute, cfg.MaxFutureSkew)
		assert.Equal(t, SeriesConfig{MaxSeries: 5000, TTL: 30 * time.Minute}, cfg.Series)
		assert.Equal(t, RateLimitConfig{RecordsPerSecond: 100, Burst: 8_640_000, RecordsPerDay: 0}, cfg.RateLimit)
		assert.Equal(t, []StreamConfig{
			{
				Name:           "billing-records-processed",
				Metrics:        []string{"billing.records.processed", "billing.records.retried"},
				Granularity:    "HOURLY",
				ElementName:    "customer.id",
				Filter:         map[string]string{"custom:feature": "feature", "tag:environment": "deployment.environment"},
				StaticFilter:   map[string][]string{"tag:owner": {"frank", "sandy"}},
				FilterDefaults: map[string]string{"tag:environment": "unknown"},
				Value:          ValueSum,
			},
			{Name: "storage.byte-seconds", Metrics: []string{"storage.bytes"}, ElementName: "tenant", Value: ValueIntegral},
		}, cfg.Streams)

		assert.Equal(t, DeliveryReplace, cfg.Delivery)
		require.NotNil(t, cfg.Storage)
		assert.Equal(t, component.MustNewIDWithName("file_storage", "cloudzero"), *cfg.Storage)
		assert.Equal(t, 10*time.Minute, cfg.FlushInterval)
		assert.Equal(t, 25*time.Second, cfg.ShutdownTimeout)
		assert.Equal(t, 200_000, cfg.MaxKeys)
		assert.True(t, cfg.BackOffConfig.Enabled)
		assert.Equal(t, 2*time.Second, cfg.BackOffConfig.InitialInterval)
		assert.Equal(t, time.Minute, cfg.BackOffConfig.MaxInterval)
		assert.Equal(t, 2.0, cfg.BackOffConfig.Multiplier)
		assert.Zero(t, cfg.BackOffConfig.MaxElapsedTime)
	})
}

func TestDefaultConfig(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	assert.Equal(t, "https://api.cloudzero.com", cfg.ClientConfig.Endpoint)
	assert.Equal(t, "HOURLY", cfg.Granularity)
	assert.Equal(t, RateLimitConfig{RecordsPerSecond: 5000, Burst: 300_000, RecordsPerDay: 1_000_000}, cfg.RateLimit)
	assert.Empty(t, cfg.ClientConfig.Compression, "CloudZero documents no compression: send uncompressed")
	assert.Equal(t, DeliverySum, cfg.Delivery, "sum needs no storage")
	assert.Nil(t, cfg.Storage)
	assert.Equal(t, 5*time.Minute, cfg.FlushInterval)
	assert.Equal(t, 20*time.Second, cfg.ShutdownTimeout, "below Kubernetes' 30s grace period")
	assert.Equal(t, 1_000_000, cfg.MaxKeys)
	assert.True(t, cfg.BackOffConfig.Enabled)
	assert.Zero(t, cfg.BackOffConfig.MaxElapsedTime, "retries never give up")
	assert.Equal(t, time.Second, cfg.BackOffConfig.InitialInterval)

	// The defaults alone are invalid only for what the user must say.
	err := confmap.Validate(cfg)
	require.Error(t, err)
	assert.ErrorContains(t, err, "api_key: must be set")
	assert.ErrorContains(t, err, "streams: at least one stream is required")
}

func TestInvalidConfigs(t *testing.T) {
	tests := []struct {
		name string
		want []string // every substring must appear in the error
	}{
		{"missing_api_key", []string{"api_key: must be set"}},
		{"bad_endpoint", []string{`endpoint: "ftp://api.cloudzero.com" is not an http(s) URL`}},
		{"no_streams", []string{"streams: at least one stream is required"}},
		{"duplicate_stream", []string{`streams[1] ("requests"): name: duplicate of streams[0]`}},
		{"bad_stream_name", []string{`streams[0] ("requests per customer"): name: must match`}},
		{"empty_metrics", []string{`streams[0] ("requests"): metrics: at least one metric name is required`}},
		{"empty_element_name", []string{`streams[0] ("requests"): element_name: must name the attribute`}},
		{"too_many_filter_keys", []string{`streams[0] ("requests"): filter: 6 keys in filter and static_filter together, CloudZero allows at most 5`}},
		{"filter_key_in_both", []string{`streams[0] ("requests"): static_filter: key "custom:feature" is also in filter`}},
		{"too_many_static_values", []string{`streams[0] ("requests"): static_filter: key "tag:owner" has 21 values, CloudZero allows at most 20`}},
		{"bare_prefix", []string{`streams[0] ("requests"): filter: key "custom:" is a bare prefix`}},
		{"empty_filter_key", []string{`streams[0] ("requests"): static_filter: key "" is empty`}},
		{"bad_granularity", []string{`streams[0] ("requests"): granularity: "WEEKLY" must be HOURLY or DAILY`}},
		{"bad_value_mode", []string{`streams[0] ("requests"): value: "average" must be one of auto, count, sum, integral`}},
		{"default_not_in_filter", []string{`streams[0] ("requests"): filter_defaults: key "tag:environment" is not a key of filter`}},
		{"bad_rate_limit", []string{"rate_limit.records_per_second: must be positive", "rate_limit.burst: must be positive"}},
		{"bad_delivery", []string{`delivery: "upsert" must be sum or replace`}},
		{"replace_without_storage", []string{"delivery: replace needs storage (e.g. storage: file_storage)"}},
		{"bad_delivery_timing", []string{"timeout: must be positive", "flush_interval: must be at least 1s, got 100ms", "shutdown_timeout: must be positive", "max_keys: must be positive"}},
		{"retry_gives_up", []string{"retry_on_failure.max_elapsed_time: must be 0 (got 10m0s)"}},
		{"retry_disabled", []string{"retry_on_failure.enabled: must be true"}},
		{"several_problems", []string{
			"api_key: must be set",
			`streams[0] ("bad name"): name: must match`,
			`streams[0] ("bad name"): metrics: at least one metric name is required`,
			`streams[0] ("bad name"): element_name: must name the attribute`,
			`streams[1] ("ok"): value: "average" must be one of`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(t, tt.name)
			require.NoError(t, err)
			err = confmap.Validate(cfg)
			require.Error(t, err)
			for _, w := range tt.want {
				assert.ErrorContains(t, err, w)
			}
			assert.NotContains(t, err.Error(), "secret-key", "the API key must never appear in errors")
		})
	}
}

func TestUnknownStreamKeyRejected(t *testing.T) {
	_, err := loadConfig(t, "typo_in_stream")
	require.Error(t, err)
	assert.ErrorContains(t, err, `streams[0]: unknown key "granularty"`)
}

func TestUnknownTopLevelKeyRejected(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	err := confmap.NewFromStringMap(map[string]any{"api_key": "k", "granularty": "DAILY"}).Unmarshal(cfg)
	require.Error(t, err)
	assert.ErrorContains(t, err, "granularty")
}

// sending_queue was this exporter's queue before the ledger: a config that
// still has it is refused with what to do instead, not silently ignored.
func TestSendingQueueIsRefusedWithAnExplanation(t *testing.T) {
	_, err := loadConfig(t, "old_sending_queue")
	require.Error(t, err)
	assert.ErrorContains(t, err, "sending_queue: no longer applies")
	assert.ErrorContains(t, err, "storage: <extension>")
}

func TestDotStreamNamesRejected(t *testing.T) {
	for _, name := range []string{".", ".."} {
		cfg := createDefaultConfig().(*Config)
		cfg.APIKey = "k"
		cfg.Streams = []StreamConfig{{Name: name, Metrics: []string{"m"}, ElementName: "e"}}
		assert.ErrorContains(t, cfg.Validate(), "name: . and .. are URL path segments")
	}
}
