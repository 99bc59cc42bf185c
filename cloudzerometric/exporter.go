package cloudzerometric

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	cloudzeroexporter "github.com/cloudzero-otel/cloudzeroexporter"
	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
)

// Exporter is an sdkmetric.Exporter that turns the SDK's metrics into
// CloudZero allocation records. It runs the collector exporter's component
// in-process: the same translator, ledger, journal and sender.
type Exporter struct {
	metrics     exporter.Metrics // for Start and Shutdown
	component   inProcessComponent
	host        *inProcessHost
	temporality sdkmetric.TemporalitySelector
	aggregation sdkmetric.AggregationSelector

	mu       sync.Mutex
	shutdown bool          // Shutdown was called
	stopped  chan struct{} // closed when the first Shutdown has ended
	stopErr  error         // its result, read after stopped is closed
}

var _ sdkmetric.Exporter = (*Exporter)(nil)

// inProcessComponent is what the collector component offers beyond
// exporter.Metrics, for in-process use.
type inProcessComponent interface {
	Consume(context.Context, pmetric.Metrics) error // ConsumeMetrics, without exporterhelper
	Flush(context.Context) error
	LedgerStats() czexporter.LedgerStats
	CountRefused(ctx context.Context, points int, err error)
}

type options struct {
	name          string
	storageDir    string
	meterProvider metric.MeterProvider
	logger        *zap.Logger
	temporality   sdkmetric.TemporalitySelector
	aggregation   sdkmetric.AggregationSelector
}

// Option configures New.
type Option func(*options)

// WithName names the exporter ("cloudzero/<name>"), when a process runs
// several: it names the storage file, its log entries, and its telemetry
// (the instrumentation scope attribute otelcol.component.id, as in the
// collector).
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithStorageDir keeps the ledger and the series state in dir, through the
// collector's file_storage extension (a bbolt file named after the
// exporter): what Export counted survives a restart or a crash, and
// delivery: replace becomes possible. dir is created if missing. Without
// it, what is not sent by Shutdown is lost (and counted).
func WithStorageDir(dir string) Option { return func(o *options) { o.storageDir = dir } }

// WithMeterProvider publishes the exporter's own telemetry (records sent,
// dropped by reason, ambiguous failures, the ledger's gauges; the names of
// the collector component, otelcol_exporter_cloudzero_*) on mp. Never pass
// the provider this exporter exports: its metrics would feed it. Default:
// none.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(o *options) { o.meterProvider = mp }
}

// WithLogger logs to l. Default: warnings and errors (a failed send, a
// drop) go to otel.Handle, the SDK's error handler.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.logger = l } }

// WithTemporalitySelector replaces DeltaTemporality.
func WithTemporalitySelector(s sdkmetric.TemporalitySelector) Option {
	return func(o *options) { o.temporality = s }
}

// WithAggregationSelector replaces sdkmetric.DefaultAggregationSelector.
func WithAggregationSelector(s sdkmetric.AggregationSelector) Option {
	return func(o *options) { o.aggregation = s }
}

// DeltaTemporality is the default temporality: delta for counters and
// histograms, the usage of each interval as it is billed; cumulative for
// up-down counters, whose level the integral of value: auto needs (a delta
// up-down counter gives only changes, refused as delta_updown_integral).
// Cumulative input works as well (the translator turns it into deltas).
func DeltaTemporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	switch k {
	case sdkmetric.InstrumentKindCounter, sdkmetric.InstrumentKindObservableCounter, sdkmetric.InstrumentKindHistogram:
		return metricdata.DeltaTemporality
	}
	return metricdata.CumulativeTemporality
}

// New checks cfg (errors name the field, as the collector's do), restores
// the stored state with WithStorageDir, and starts sending. cfg is not
// kept: later changes to it do nothing.
func New(ctx context.Context, cfg *Config, opts ...Option) (*Exporter, error) {
	o := options{temporality: DeltaTemporality, aggregation: sdkmetric.DefaultAggregationSelector}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg == nil {
		return nil, errors.New("cloudzero: nil config (start from cloudzerometric.NewConfig())")
	}
	c := *cfg
	if err := checkInProcess(&c, o.storageDir); err != nil {
		return nil, fmt.Errorf("cloudzero: invalid config: %w", err)
	}
	set := settings(o)
	host := &inProcessHost{}
	if o.storageDir != "" {
		ext, id, err := newFileStorage(ctx, o.storageDir, set)
		if err != nil {
			return nil, err
		}
		c.Storage = &id
		host.storage, host.extensions = ext, map[component.ID]component.Component{id: ext}
	}
	if err := confmap.Validate(&c); err != nil {
		_ = host.shutdown(ctx)
		return nil, fmt.Errorf("cloudzero: invalid config: %w", err)
	}
	m, err := cloudzeroexporter.NewFactory().CreateMetrics(ctx, set, &c)
	if err != nil {
		_ = host.shutdown(ctx)
		return nil, err
	}
	inproc, ok := m.(inProcessComponent)
	if !ok { // not reached: the factory's exporter has both methods
		_ = host.shutdown(ctx)
		return nil, errors.New("cloudzero: the exporter component cannot run in-process")
	}
	if err := m.Start(ctx, host); err != nil {
		_ = m.Shutdown(ctx)
		_ = host.shutdown(ctx)
		if errors.Is(err, bolterrors.ErrTimeout) { // file_storage could not lock the file
			err = fmt.Errorf("cloudzero: storage directory %s is in use by another exporter named %q (in this or another process): %w",
				o.storageDir, set.ID.String(), err)
		}
		return nil, err
	}
	return &Exporter{metrics: m, component: inproc, host: host, temporality: o.temporality, aggregation: o.aggregation,
		stopped: make(chan struct{})}, nil
}

func settings(o options) exporter.Settings {
	id := component.NewID(cloudzeroexporter.NewFactory().Type())
	if o.name != "" {
		id = component.NewIDWithName(id.Type(), o.name)
	}
	var mp metric.MeterProvider = metricnoop.NewMeterProvider()
	if o.meterProvider != nil {
		mp = scopeAttributes{MeterProvider: o.meterProvider, attrs: []attribute.KeyValue{
			attribute.String("otelcol.component.id", id.String()),
			attribute.String("otelcol.component.kind", "exporter"),
			attribute.String("otelcol.signal", "metrics"),
		}}
	}
	log := o.logger
	if log == nil {
		log = handlerLogger()
	}
	return exporter.Settings{
		ID: id,
		TelemetrySettings: component.TelemetrySettings{
			Logger:         log.With(zap.String("otelcol.component.id", id.String())),
			TracerProvider: tracenoop.NewTracerProvider(),
			MeterProvider:  mp,
			Resource:       pcommon.NewResource(),
		},
		BuildInfo: component.BuildInfo{Command: "cloudzerometric", Description: "CloudZero exporter for the OpenTelemetry Go SDK", Version: czexporter.Version},
	}
}

// scopeAttributes adds attrs to the instrumentation scope of every meter,
// as the collector does for each component's telemetry: two exporters on
// one MeterProvider publish apart.
type scopeAttributes struct {
	metric.MeterProvider
	attrs []attribute.KeyValue
}

func (p scopeAttributes) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	own := metric.NewMeterConfig(opts...).InstrumentationAttributes()
	attrs := append(slices.Clone(p.attrs), own.ToSlice()...)
	return p.MeterProvider.Meter(name, append(opts, metric.WithInstrumentationAttributes(attrs...))...)
}

// Temporality is the selector of WithTemporalitySelector (default
// DeltaTemporality).
func (e *Exporter) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return e.temporality(k)
}

// Aggregation is the selector of WithAggregationSelector (default
// sdkmetric.DefaultAggregationSelector: histograms are explicit-bucket;
// streams use their count or sum, so the buckets do not matter).
func (e *Exporter) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return e.aggregation(k)
}

// Export counts rm's usage into the ledger and returns once it is there
// (with WithStorageDir, stored); sending happens in the background, every
// flush_interval. rm is not kept. When the usage cannot be counted yet
// (max_keys reached, a storage write failed) Export retries until ctx
// ends, then returns the error: the usage of rm is then lost, and counted
// in datapoints_refused. The PeriodicReader gives Export a
// context bounded by its timeout (WithTimeout, default 30s); a context
// without a deadline lets Export wait until the ledger has room again.
func (e *Exporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	if e.isShutdown() {
		return sdkmetric.ErrExporterShutdown
	}
	if rm == nil {
		return nil
	}
	md := toPdata(rm)
	if md.DataPointCount() == 0 {
		return nil
	}
	wait := 50 * time.Millisecond
	for {
		err := e.component.Consume(ctx, md)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, czexporter.ErrStopped):
			e.component.CountRefused(ctx, md.DataPointCount(), err)
			return sdkmetric.ErrExporterShutdown
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			e.component.CountRefused(ctx, md.DataPointCount(), err) // once, not per try
			return fmt.Errorf("cloudzero: %d data points not counted: %w (gave up: %w)", md.DataPointCount(), err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// ForceFlush sends everything the ledger holds, retrying failures until
// ctx ends (then it returns ctx's error; what was not sent stays in the
// ledger). During or after Shutdown, which sends everything, it returns
// Shutdown's result (or ctx's error, if ctx ends first).
func (e *Exporter) ForceFlush(ctx context.Context) error {
	if !e.isShutdown() {
		err := e.component.Flush(ctx)
		if !errors.Is(err, czexporter.ErrStopped) {
			return err
		}
	}
	return e.waitStopped(ctx)
}

// Shutdown sends everything the ledger holds, retrying failures for at most
// shutdown_timeout or until ctx ends. What CloudZero did not confirm by
// then makes the error: with WithStorageDir it stays stored for the next
// start; without, it is lost (and counted as records_dropped{reason=
// "shutdown"}). Later calls wait for the first one (at most until their
// own ctx ends) and return its result.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	first := !e.shutdown
	e.shutdown = true
	e.mu.Unlock()
	if !first {
		return e.waitStopped(ctx)
	}
	err := e.metrics.Shutdown(ctx)
	if st := e.component.LedgerStats(); st.UnsentKeys > 0 {
		fate := "lost (no storage)"
		if e.host.storage != nil {
			fate = "stored, sent at the next start"
		}
		err = errors.Join(err, fmt.Errorf("cloudzero: shutdown: %d records (%v units) not confirmed by CloudZero: %s",
			st.UnsentKeys, st.UnsentUnits, fate))
	}
	e.stopErr = errors.Join(err, e.host.shutdown(ctx))
	close(e.stopped)
	return e.stopErr
}

// waitStopped returns the first Shutdown's result once it has ended, or
// ctx's error.
func (e *Exporter) waitStopped(ctx context.Context) error {
	select {
	case <-e.stopped:
		return e.stopErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Exporter) isShutdown() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.shutdown
}
