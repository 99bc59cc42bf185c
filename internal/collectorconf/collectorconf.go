// Package collectorconf reads the cloudzero exporter's sections of a
// collector config file as the collector does (${env:...} and ${file:...}
// expanded, the factory's defaults, strict decoding, the exporter's
// validation), for the SDK exporter and the cloudzero command.
package collectorconf

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

// File is a resolved collector config file.
type File struct {
	path string
	conf *confmap.Conf
}

// Load reads and resolves the collector config at path.
func Load(ctx context.Context, path string) (*File, error) {
	conf, err := resolve(ctx, "file:"+path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, conf: conf}, nil
}

// Exporters returns the ids of the file's cloudzero exporters ("cloudzero",
// "cloudzero/<name>"), sorted.
func (f *File) Exporters() []string {
	typ := cloudzeroexporter.NewFactory().Type().String()
	var ids []string
	for _, id := range f.keys("exporters") {
		if id == typ || strings.HasPrefix(id, typ+"/") {
			ids = append(ids, id)
		}
	}
	return ids
}

// Extensions returns the ids declared under extensions:, sorted.
func (f *File) Extensions() []string { return f.keys("extensions") }

func (f *File) keys(section string) []string {
	sub, err := f.conf.Sub(section)
	if err != nil {
		return nil
	}
	return slices.Sorted(maps.Keys(sub.ToStringMap()))
}

// Exporter decodes the section of the exporter id over the defaults and
// validates it, except that delivery: replace has storage (an SDK app
// persists through an option instead; Validate checks it).
func (f *File) Exporter(id string) (*cloudzeroexporter.Config, error) {
	return f.ExporterWith(id, nil)
}

// ExporterWith is Exporter with adjust applied to the decoded config
// before it is validated (the cloudzero command's preview runs it in
// dry-run mode, where no API key is needed).
func (f *File) ExporterWith(id string, adjust func(*cloudzeroexporter.Config)) (*cloudzeroexporter.Config, error) {
	exporters, err := f.conf.Sub("exporters")
	if err != nil {
		return nil, fmt.Errorf("cloudzero: %s: exporters: %w", f.path, err)
	}
	if !exporters.IsSet(id) {
		names := slices.Sorted(maps.Keys(exporters.ToStringMap()))
		return nil, fmt.Errorf("cloudzero: %s: no exporter %q under exporters (has: %s)", f.path, id, strings.Join(names, ", "))
	}
	sub, err := exporters.Sub(id)
	if err != nil {
		return nil, fmt.Errorf("cloudzero: %s: exporters::%s: %w", f.path, id, err)
	}
	cfg, err := decode(sub, adjust)
	if err != nil {
		return nil, fmt.Errorf("%s: exporters::%s: %w", f.path, id, err)
	}
	return cfg, nil
}

// Validate reports every problem the collector would find in the exporter
// id's section: its decoding and validation, and a storage extension that
// the file does not declare (the collector fails at start).
func (f *File) Validate(id string) error {
	cfg, err := f.Exporter(id)
	if err != nil {
		return err
	}
	var errs []error
	if err := confmap.Validate(cfg); err != nil {
		errs = append(errs, fmt.Errorf("cloudzero: invalid config: %w", err))
	}
	if cfg.Storage != nil && !slices.Contains(f.Extensions(), cfg.Storage.String()) {
		errs = append(errs, fmt.Errorf("storage: extension %q is not declared under extensions: (the collector would fail at start)", cfg.Storage.String()))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: exporters::%s: %w", f.path, id, errors.Join(errs...))
	}
	return nil
}

// FromYAML decodes an exporter section (what goes under `exporters:
// cloudzero:`) as Exporter does.
func FromYAML(ctx context.Context, section []byte) (*cloudzeroexporter.Config, error) {
	conf, err := resolve(ctx, "yaml:"+string(section))
	if err != nil {
		return nil, err
	}
	return decode(conf, nil)
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

func decode(conf *confmap.Conf, adjust func(*cloudzeroexporter.Config)) (*cloudzeroexporter.Config, error) {
	cfg := cloudzeroexporter.NewFactory().CreateDefaultConfig().(*cloudzeroexporter.Config)
	if err := conf.Unmarshal(cfg); err != nil {
		return nil, fmt.Errorf("cloudzero: config: %w", err)
	}
	if adjust != nil {
		adjust(cfg)
	}
	c := *cfg
	if c.Storage == nil {
		c.Storage = &component.ID{}
	}
	if err := confmap.Validate(&c); err != nil {
		return nil, fmt.Errorf("cloudzero: invalid config: %w", err)
	}
	return cfg, nil
}
