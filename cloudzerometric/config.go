package cloudzerometric

import (
	"context"
	"errors"
	"fmt"

	cloudzeroexporter "github.com/cloudzero-otel/cloudzeroexporter"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/collectorconf"
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
	return collectorconf.FromYAML(ctx, section)
}

// ConfigFromCollectorFile reads a collector config file and decodes the
// section of the exporter named id ("cloudzero" or "cloudzero/<name>"),
// expanding ${env:NAME} and ${file:PATH} as the collector does, and
// validates it as ConfigFromYAML does: an app can share the collector's YAML.
func ConfigFromCollectorFile(ctx context.Context, path, id string) (*Config, error) {
	f, err := collectorconf.Load(ctx, path)
	if err != nil {
		return nil, err
	}
	return f.Exporter(id)
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
