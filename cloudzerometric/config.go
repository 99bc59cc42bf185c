package cloudzerometric

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"

	cloudzeroexporter "github.com/cloudzero-otel/cloudzeroexporter"
)

// Config is the collector exporter's configuration, unchanged: the same
// fields, defaults and validation (see the README's configuration
// reference). Two of its fields are the collector's and are set through
// options instead: Storage (use WithStorageDir) and auth (authenticator
// extensions need a collector).
type Config = cloudzeroexporter.Config

// StreamConfig maps metrics onto one CloudZero allocation stream.
type StreamConfig = cloudzeroexporter.StreamConfig

// NewConfig returns the defaults, those of the collector exporter.
func NewConfig() *Config {
	return cloudzeroexporter.NewFactory().CreateDefaultConfig().(*Config)
}

// ConfigFromYAML decodes the exporter's section of a collector config (what
// goes under `exporters: cloudzero:`) over the defaults, expanding
// ${env:NAME} and ${file:PATH} as the collector does, and validates it
// (whether delivery: replace has storage is New's to check: storage comes
// from WithStorageDir).
func ConfigFromYAML(ctx context.Context, section []byte) (*Config, error) {
	conf, err := resolve(ctx, "yaml:"+string(section))
	if err != nil {
		return nil, err
	}
	return decode(conf)
}

// ConfigFromCollectorFile reads a collector config file and decodes the
// section of the exporter named id ("cloudzero" or "cloudzero/<name>"),
// expanding ${env:NAME} and ${file:PATH} as the collector does, and
// validates it as ConfigFromYAML does: an app can share the collector's YAML.
func ConfigFromCollectorFile(ctx context.Context, path, id string) (*Config, error) {
	conf, err := resolve(ctx, "file:"+path)
	if err != nil {
		return nil, err
	}
	exporters, err := conf.Sub("exporters")
	if err != nil {
		return nil, fmt.Errorf("cloudzero: %s: exporters: %w", path, err)
	}
	if !exporters.IsSet(id) {
		names := slices.Sorted(maps.Keys(exporters.ToStringMap()))
		return nil, fmt.Errorf("cloudzero: %s: no exporter %q under exporters (has: %s)", path, id, strings.Join(names, ", "))
	}
	sub, err := exporters.Sub(id)
	if err != nil {
		return nil, fmt.Errorf("cloudzero: %s: exporters::%s: %w", path, id, err)
	}
	cfg, err := decode(sub)
	if err != nil {
		return nil, fmt.Errorf("%s: exporters::%s: %w", path, id, err)
	}
	return cfg, nil
}

func resolve(ctx context.Context, uri string) (*confmap.Conf, error) {
	r, err := confmap.NewResolver(confmap.ResolverSettings{
		URIs:              []string{uri},
		ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory(), envprovider.NewFactory(), yamlprovider.NewFactory()},
		DefaultScheme:     "env",
	})
	if err != nil {
		return nil, fmt.Errorf("cloudzero: config: %w", err)
	}
	conf, err := r.Resolve(ctx)
	if err != nil {
		return nil, fmt.Errorf("cloudzero: config: %w", err)
	}
	return conf, r.Shutdown(ctx)
}

func decode(conf *confmap.Conf) (*Config, error) {
	cfg := NewConfig()
	if err := conf.Unmarshal(cfg); err != nil {
		return nil, fmt.Errorf("cloudzero: config: %w", err)
	}
	// Storage comes from WithStorageDir, which New sees: check the rest here
	// (replace's need for storage is New's to check).
	c := *cfg
	if c.Storage == nil {
		c.Storage = &component.ID{}
	}
	if err := confmap.Validate(&c); err != nil {
		return nil, fmt.Errorf("cloudzero: invalid config: %w", err)
	}
	return cfg, nil
}

// checkInProcess reports the collector-only settings of cfg that cannot
// work in-process.
func checkInProcess(cfg *Config, storageDir string) error {
	var errs []error
	if cfg.Storage != nil && storageDir == "" {
		errs = append(errs, fmt.Errorf("storage: %q names a collector extension; in-process, persist with cloudzerometric.WithStorageDir(dir)", cfg.Storage.String()))
	}
	if cfg.ClientConfig.Auth.HasValue() {
		errs = append(errs, errors.New("auth: authenticator extensions need a collector; in-process, set headers (e.g. headers: {X-Key: ...}) instead"))
	}
	return errors.Join(errs...)
}
