package cloudzeroexporter // import "github.com/cloudzero-otel/cloudzeroexporter"

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/confighttp"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/confmap"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// Value modes of a stream (see README, "What one record means").
const (
	ValueAuto     = "auto"
	ValueCount    = "count"
	ValueSum      = "sum"
	ValueIntegral = "integral"
)

// Delivery modes (see README, "Delivery").
const (
	DeliverySum     = "sum"
	DeliveryReplace = "replace"
)

// Config is the configuration of the cloudzero exporter.
type Config struct {
	// ClientConfig is a named field: confighttp.ClientConfig implements
	// confmap.Unmarshaler, and embedding it anonymously would let its method
	// decode the whole config and silently drop our own keys.
	ClientConfig confighttp.ClientConfig `mapstructure:",squash"`
	// BackOffConfig: the delays between retries of a failed send. Retries
	// never end while the collector runs: enabled must stay true and
	// max_elapsed_time 0.
	BackOffConfig configretry.BackOffConfig `mapstructure:"retry_on_failure"`

	// APIKey is sent raw in the Authorization header. Never logged.
	APIKey configopaque.String `mapstructure:"api_key"`
	// Granularity is the default granularity of streams: HOURLY or DAILY.
	Granularity string `mapstructure:"granularity"`
	// Streams map metrics onto CloudZero allocation streams.
	Streams []StreamConfig `mapstructure:"streams"`
	// RateLimit is the client-side limit on records sent.
	RateLimit RateLimitConfig `mapstructure:"rate_limit"`
	// MaxRecordsPerRequest caps the records of one POST (also capped at 5 MB).
	MaxRecordsPerRequest int `mapstructure:"max_records_per_request"`
	// Series bounds the translator's per-series state.
	Series SeriesConfig `mapstructure:"series"`
	// MaxPointAge drops points older than this (counted as too_old).
	MaxPointAge time.Duration `mapstructure:"max_point_age"`
	// MaxFutureSkew drops points stamped further than this in the future.
	MaxFutureSkew time.Duration `mapstructure:"max_future_skew"`
	// DryRun builds the exact request bodies and logs them (or writes them
	// to DryRunFile) instead of sending them.
	DryRun     bool   `mapstructure:"dry_run"`
	DryRunFile string `mapstructure:"dry_run_file"`

	// Delivery is sum (additive; several writers may share keys) or
	// replace (idempotent totals; one writer per key; needs Storage).
	Delivery string `mapstructure:"delivery"`
	// Storage names a storage extension (e.g. file_storage) that keeps the
	// ledger and the series state across restarts.
	Storage *component.ID `mapstructure:"storage"`
	// FlushInterval: a changed key of an open bucket is sent at most this
	// often; closed buckets are sent a minute after they end.
	FlushInterval time.Duration `mapstructure:"flush_interval"`
	// ShutdownTimeout bounds how long shutdown flushes and retries.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// MaxKeys bounds the ledger's record keys; usage needing a new key beyond
	// it is refused with a retryable error.
	MaxKeys int `mapstructure:"max_keys"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// StreamConfig maps metrics onto one CloudZero allocation stream.
type StreamConfig struct {
	// Name is the CloudZero stream name.
	Name string `mapstructure:"name"`
	// Metrics are the exact metric names feeding this stream.
	Metrics []string `mapstructure:"metrics"`
	// Granularity overrides the exporter's default granularity when set.
	Granularity string `mapstructure:"granularity"`
	// ElementName is the attribute key whose value is the record's element.
	ElementName string `mapstructure:"element_name"`
	// Filter maps a CloudZero dimension key to an attribute key.
	Filter map[string]string `mapstructure:"filter"`
	// StaticFilter adds constant dimension values to every record.
	StaticFilter map[string][]string `mapstructure:"static_filter"`
	// FilterDefaults are used when a Filter attribute is missing.
	FilterDefaults map[string]string `mapstructure:"filter_defaults"`
	// Value is auto (the default), count, sum or integral.
	Value string `mapstructure:"value"`
}

// RateLimitConfig is the client-side record budget.
type RateLimitConfig struct {
	RecordsPerSecond float64 `mapstructure:"records_per_second"`
	Burst            int     `mapstructure:"burst"`
	// RecordsPerDay is the budget per UTC day; 0 means none.
	RecordsPerDay int64 `mapstructure:"records_per_day"`
}

// SeriesConfig bounds per-series state (cumulative baselines, last gauge points).
type SeriesConfig struct {
	// MaxSeries is the number of series tracked; points of new series beyond
	// it are dropped and counted (series_limit).
	MaxSeries int `mapstructure:"max_series"`
	// TTL forgets series unseen for this long.
	TTL time.Duration `mapstructure:"ttl"`
}

var (
	_ confmap.Validator   = (*Config)(nil)
	_ confmap.Unmarshaler = (*Config)(nil)
)

// Unmarshal rejects unknown keys before decoding, with messages that name the
// stream and list the valid keys (and say what replaced a removed key): a
// mistyped `granularty:` must fail, not fall back to the default. Collectors
// before v0.165 let such keys through (the squashed confighttp.ClientConfig
// had its own Unmarshal); newer ones reject them with a terser message.
func (cfg *Config) Unmarshal(conf *confmap.Conf) error {
	if err := unknownKeys(conf); err != nil {
		return err
	}
	return conf.Unmarshal(cfg)
}

func unknownKeys(conf *confmap.Conf) error {
	var errs []error
	for key := range conf.ToStringMap() {
		if why, ok := removedKeys[key]; ok {
			errs = append(errs, fmt.Errorf("%s: %s", key, why))
		} else if !slices.Contains(configKeys, key) {
			errs = append(errs, fmt.Errorf("unknown key %q", key))
		}
	}
	streams, _ := conf.Get("streams").([]any)
	for i, s := range streams {
		m, _ := s.(map[string]any)
		for key := range m {
			if !slices.Contains(streamKeys, key) {
				errs = append(errs, fmt.Errorf("streams[%d]: unknown key %q (valid keys: %s)", i, key, strings.Join(streamKeys, ", ")))
			}
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// removedKeys are keys of earlier versions, with what to do instead.
var removedKeys = map[string]string{
	"sending_queue": "no longer applies: the exporter keeps unsent usage in its own ledger, merged by record key " +
		"(remove sending_queue; use storage: <extension> for persistence, flush_interval, max_keys)",
}

var (
	configKeys = mapstructureKeys(reflect.TypeFor[Config]())
	streamKeys = mapstructureKeys(reflect.TypeFor[StreamConfig]())
)

// mapstructureKeys lists the keys a struct decodes, following squashed fields.
func mapstructureKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		switch {
		case opts == "squash":
			keys = append(keys, mapstructureKeys(f.Type)...)
		case name != "" && name != "-":
			keys = append(keys, name)
		}
	}
	return keys
}

// Validate checks the whole config and reports every problem at once, each
// naming the stream and the field.
func (cfg *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch key := strings.TrimSpace(string(cfg.APIKey)); {
	case key == "":
		add("api_key: must be set (e.g. api_key: ${env:CLOUDZERO_API_KEY})")
	case strings.ContainsFunc(key, unicode.IsSpace):
		add("api_key: contains whitespace inside the key; check the value or the file it is read from (the key is not shown)")
	}
	if u, err := url.Parse(cfg.ClientConfig.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("endpoint: %q is not an http(s) URL", cfg.ClientConfig.Endpoint)
	}
	if cfg.ClientConfig.Timeout <= 0 {
		add("timeout: must be positive, got %s: requests go one at a time, and one that never ends would stop delivery", cfg.ClientConfig.Timeout)
	}
	if !validGranularity(cfg.Granularity) {
		add("granularity: %q must be HOURLY or DAILY", cfg.Granularity)
	}
	if len(cfg.Streams) == 0 {
		add("streams: at least one stream is required")
	}
	seen := map[string]int{}
	for i, s := range cfg.Streams {
		prefix := fmt.Sprintf("streams[%d] (%q)", i, s.Name)
		if j, dup := seen[s.Name]; dup {
			add("%s: name: duplicate of streams[%d]", prefix, j)
		} else {
			seen[s.Name] = i
		}
		for _, e := range s.validate() {
			add("%s: %s", prefix, e)
		}
	}
	rl := cfg.RateLimit
	if !(rl.RecordsPerSecond > 0) {
		add("rate_limit.records_per_second: must be positive, got %v", rl.RecordsPerSecond)
	}
	if rl.Burst <= 0 {
		add("rate_limit.burst: must be positive, got %d", rl.Burst)
	}
	if rl.RecordsPerDay < 0 {
		add("rate_limit.records_per_day: must be positive, or 0 for no daily budget; got %d", rl.RecordsPerDay)
	}
	if cfg.MaxRecordsPerRequest <= 0 || cfg.MaxRecordsPerRequest > record.MaxRecordsPerRequest {
		add("max_records_per_request: must be between 1 and %d, got %d", record.MaxRecordsPerRequest, cfg.MaxRecordsPerRequest)
	}
	if cfg.Series.MaxSeries <= 0 {
		add("series.max_series: must be positive, got %d", cfg.Series.MaxSeries)
	}
	if cfg.Series.TTL <= 0 {
		add("series.ttl: must be positive, got %s", cfg.Series.TTL)
	}
	if cfg.MaxPointAge <= 0 {
		add("max_point_age: must be positive, got %s", cfg.MaxPointAge)
	}
	if cfg.MaxFutureSkew < 0 {
		add("max_future_skew: must not be negative, got %s", cfg.MaxFutureSkew)
	}
	if cfg.DryRunFile != "" && !cfg.DryRun {
		add("dry_run_file: only used with dry_run: true")
	}
	switch cfg.Delivery {
	case DeliverySum:
	case DeliveryReplace:
		if cfg.Storage == nil {
			add("delivery: replace needs storage (e.g. storage: file_storage): without the stored totals, " +
				"a restart would overwrite each bucket with a partial total")
		}
	default:
		add("delivery: %q must be sum or replace", cfg.Delivery)
	}
	if cfg.FlushInterval < time.Second {
		add("flush_interval: must be at least 1s, got %s", cfg.FlushInterval)
	}
	if cfg.ShutdownTimeout <= 0 {
		add("shutdown_timeout: must be positive, got %s", cfg.ShutdownTimeout)
	}
	if cfg.MaxKeys <= 0 {
		add("max_keys: must be positive, got %d", cfg.MaxKeys)
	}
	errs = append(errs, validateRetry(cfg.BackOffConfig)...)
	return errors.Join(errs...)
}

// validateRetry: retries of a failed send go on while the collector runs,
// because dropping billing data when a budget runs out is never right.
func validateRetry(b configretry.BackOffConfig) []error {
	var errs []error
	if !b.Enabled {
		errs = append(errs, errors.New("retry_on_failure.enabled: must be true: unsent usage stays in the ledger and is always retried"))
	}
	if b.MaxElapsedTime != 0 {
		errs = append(errs, fmt.Errorf("retry_on_failure.max_elapsed_time: must be 0 (got %s): the exporter retries until CloudZero "+
			"accepts or refuses the records, and never drops them because retries ran out", b.MaxElapsedTime))
	}
	if b.InitialInterval <= 0 {
		errs = append(errs, fmt.Errorf("retry_on_failure.initial_interval: must be positive, got %s", b.InitialInterval))
	}
	if b.MaxInterval < b.InitialInterval {
		errs = append(errs, fmt.Errorf("retry_on_failure.max_interval: must be at least initial_interval (%s), got %s", b.InitialInterval, b.MaxInterval))
	}
	if b.Multiplier < 1 {
		errs = append(errs, fmt.Errorf("retry_on_failure.multiplier: must be at least 1, got %v", b.Multiplier))
	}
	if b.RandomizationFactor < 0 || b.RandomizationFactor > 1 {
		errs = append(errs, fmt.Errorf("retry_on_failure.randomization_factor: must be between 0 and 1, got %v", b.RandomizationFactor))
	}
	return errs
}

// validate returns the problems of one stream, each starting with its field.
func (s StreamConfig) validate() []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if err := record.ValidStreamName(s.Name); err != nil {
		add("name: %v", err)
	}
	if len(s.Metrics) == 0 {
		add("metrics: at least one metric name is required")
	}
	for j, m := range s.Metrics {
		if m == "" {
			add("metrics[%d]: empty metric name", j)
		}
	}
	if s.Granularity != "" && !validGranularity(s.Granularity) {
		add("granularity: %q must be HOURLY or DAILY", s.Granularity)
	}
	if s.ElementName == "" {
		add("element_name: must name the attribute holding the element (e.g. customer.id)")
	}
	if n := len(s.Filter) + len(s.StaticFilter); n > record.MaxFilterKeys {
		add("filter: %d keys in filter and static_filter together, CloudZero allows at most %d", n, record.MaxFilterKeys)
	}
	for _, k := range slices.Sorted(maps.Keys(s.Filter)) {
		if msg := record.FilterKeyProblem(k); msg != "" {
			add("filter: key %q %s", k, msg)
		}
		if s.Filter[k] == "" {
			add("filter: key %q maps to an empty attribute key", k)
		}
		if _, both := s.StaticFilter[k]; both {
			add("static_filter: key %q is also in filter", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.StaticFilter)) {
		if msg := record.FilterKeyProblem(k); msg != "" {
			add("static_filter: key %q %s", k, msg)
		}
		vals := s.StaticFilter[k]
		switch {
		case len(vals) == 0:
			add("static_filter: key %q has no values", k)
		case len(vals) > record.MaxValuesPerKey:
			add("static_filter: key %q has %d values, CloudZero allows at most %d", k, len(vals), record.MaxValuesPerKey)
		}
		if slices.Contains(vals, "") {
			add("static_filter: key %q has an empty value", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.FilterDefaults)) {
		if _, ok := s.Filter[k]; !ok {
			add("filter_defaults: key %q is not a key of filter", k)
		}
	}
	switch s.Value {
	case "", ValueAuto, ValueCount, ValueSum, ValueIntegral:
	default:
		add("value: %q must be one of auto, count, sum, integral", s.Value)
	}
	return errs
}

func validGranularity(g string) bool { return record.Granularity(g).Valid() }
