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
	"go.opentelemetry.io/collector/exporter/exporterhelper"

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

		require.True(t, cfg.QueueConfig.HasValue())
		q := cfg.QueueConfig.Get()
		assert.Equal(t, 2, q.NumConsumers)
		assert.Equal(t, int64(100000), q.QueueSize)
		require.True(t, q.Batch.HasValue())
		assert.Equal(t, time.Minute, q.Batch.Get().FlushTimeout)
		assert.Equal(t, int64(1000), q.Batch.Get().MinSize)
		assert.True(t, cfg.BackOffConfig.Enabled)
		assert.Equal(t, 10*time.Minute, cfg.BackOffConfig.MaxElapsedTime)
	})
}

func TestDefaultConfig(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	assert.Equal(t, "https://api.cloudzero.com", cfg.ClientConfig.Endpoint)
	assert.Equal(t, "HOURLY", cfg.Granularity)
	assert.Equal(t, RateLimitConfig{RecordsPerSecond: 5000, Burst: 300_000, RecordsPerDay: 1_000_000}, cfg.RateLimit)
	assert.Empty(t, cfg.ClientConfig.Compression, "CloudZero documents no compression: send uncompressed")
	require.True(t, cfg.QueueConfig.HasValue())
	assert.True(t, cfg.QueueConfig.Get().Batch.HasValue(), "batching is on by default")
	assert.Equal(t, exporterhelper.RequestSizerTypeItems, cfg.QueueConfig.Get().Sizer, "the queue is bounded in records")
	assert.Equal(t, int64(200_000), cfg.QueueConfig.Get().QueueSize)
	assert.True(t, cfg.BackOffConfig.Enabled)

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

func TestQueueCanBeDisabled(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	require.NoError(t, confmap.NewFromStringMap(map[string]any{"sending_queue": map[string]any{"enabled": false}}).Unmarshal(cfg))
	assert.False(t, cfg.QueueConfig.HasValue())
}

func TestDotStreamNamesRejected(t *testing.T) {
	for _, name := range []string{".", ".."} {
		cfg := createDefaultConfig().(*Config)
		cfg.APIKey = "k"
		cfg.Streams = []StreamConfig{{Name: name, Metrics: []string{"m"}, ElementName: "e"}}
		assert.ErrorContains(t, cfg.Validate(), "name: . and .. are URL path segments")
	}
}
