package cloudzeroexporter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/metadata"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// storageName is the storage client this exporter asks its storage
// extension for: the ledger and the series state.
const storageName = "ledger"

// cloudzeroExporter is the collector component: glue between the collector
// (config, host extensions, self-telemetry) and the delivery core in
// exporter/, which translates, keeps the ledger and sends.
//
// exporterhelper is used without its queue and retry: ConsumeMetrics hands
// the data to Delivery.Consume, which returns once the usage is committed
// to the ledger; the ledger is the queue.
type cloudzeroExporter struct {
	cfg       *Config
	set       exporter.Settings
	telemetry *metadata.TelemetryBuilder
	limiter   *czexporter.Limiter
	delivery  *czexporter.Delivery // built in start: needs the host's extensions
	dryRun    io.WriteCloser
	conns     connCloser
	series    atomic.Int64 // last value reported to series_tracked
	drops     dropLog

	statsMu sync.Mutex
	stats   czexporter.LedgerStats
	statsAt time.Time
}

func newMetricsExporter(ctx context.Context, set exporter.Settings, cfg *Config) (exporter.Metrics, error) {
	tb, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	e := &cloudzeroExporter{cfg: cfg, set: set, telemetry: tb}
	e.limiter = czexporter.NewLimiter(czexporter.LimiterConfig{
		RecordsPerSecond: cfg.RateLimit.RecordsPerSecond,
		Burst:            cfg.RateLimit.Burst,
		RecordsPerDay:    int(cfg.RateLimit.RecordsPerDay),
		OnWait: func(ctx context.Context, waited time.Duration, _ string) {
			tb.ExporterCloudzeroRateLimitWaitTime.Add(ctx, waited.Seconds())
		},
	})
	if err := e.registerGauges(); err != nil {
		return nil, err
	}
	m, err := exporterhelper.NewMetrics(ctx, set, cfg, e.push,
		exporterhelper.WithStart(e.start),
		exporterhelper.WithShutdown(e.shutdown),
		exporterhelper.WithCapabilities(consumer.Capabilities{MutatesData: false}),
		exporterhelper.WithTimeout(exporterhelper.TimeoutConfig{Timeout: 0}),
		exporterhelper.WithRetry(configretry.BackOffConfig{Enabled: false}),
		exporterhelper.WithQueue(configoptional.None[exporterhelper.QueueBatchConfig]()),
	)
	if err != nil {
		return nil, err
	}
	return flushableMetrics{Metrics: m, e: e}, nil
}

// flushableMetrics is the component as the factory returns it: an
// exporter.Metrics that can also Flush, tell its LedgerStats, and Consume
// without exporterhelper around it. The collector calls neither; package cloudzerometric (the SDK
// exporter, which runs this component in-process) calls Consume from
// Export, which retries itself (exporterhelper would log each refused try
// as rejected data), and Flush from ForceFlush.
type flushableMetrics struct {
	exporter.Metrics
	e *cloudzeroExporter
}

// Consume is ConsumeMetrics without exporterhelper: the usage of md is in
// the ledger when it returns nil. A refusal is not counted: the caller
// retries, and calls CountRefused when it gives up.
func (m flushableMetrics) Consume(ctx context.Context, md pmetric.Metrics) error {
	return m.e.consume(ctx, md)
}

// CountRefused counts points whose Consume failed with err and that will not
// be tried again, in datapoints_refused.
func (m flushableMetrics) CountRefused(ctx context.Context, points int, err error) {
	m.e.countRefused(ctx, points, err)
}

// LedgerStats describes the ledger (zero before Start).
func (m flushableMetrics) LedgerStats() czexporter.LedgerStats {
	m.e.statsMu.Lock()
	d := m.e.delivery
	m.e.statsMu.Unlock()
	if d == nil {
		return czexporter.LedgerStats{}
	}
	return d.Stats()
}

// Flush sends everything the ledger holds, retrying failures until ctx ends.
func (m flushableMetrics) Flush(ctx context.Context) error {
	m.e.statsMu.Lock()
	d := m.e.delivery
	m.e.statsMu.Unlock()
	if d == nil {
		return errors.New("cloudzero: Flush before Start")
	}
	return d.Flush(ctx)
}

func translatorSettings(cfg *Config) translator.Settings {
	s := translator.Settings{
		MaxSeries:     cfg.Series.MaxSeries,
		SeriesTTL:     cfg.Series.TTL,
		MaxAge:        cfg.MaxPointAge,
		MaxFutureSkew: cfg.MaxFutureSkew,
	}
	for _, sc := range cfg.Streams {
		g := sc.Granularity
		if g == "" {
			g = cfg.Granularity
		}
		s.Streams = append(s.Streams, translator.Stream{
			Name:           sc.Name,
			Metrics:        sc.Metrics,
			Granularity:    record.Granularity(g),
			ElementName:    sc.ElementName,
			Filter:         sc.Filter,
			StaticFilter:   sc.StaticFilter,
			FilterDefaults: sc.FilterDefaults,
			Value:          translator.ValueMode(sc.Value),
		})
	}
	return s
}

func (e *cloudzeroExporter) start(ctx context.Context, host component.Host) error {
	cfg := e.cfg
	b := cfg.BackOffConfig
	dcfg := czexporter.DeliveryConfig{
		Op:                   czexporter.Op(cfg.Delivery),
		Translator:           translatorSettings(cfg),
		FlushInterval:        cfg.FlushInterval,
		ShutdownTimeout:      cfg.ShutdownTimeout,
		MaxKeys:              cfg.MaxKeys,
		Backoff:              czexporter.Backoff{InitialInterval: b.InitialInterval, MaxInterval: b.MaxInterval, Multiplier: b.Multiplier, RandomizationFactor: b.RandomizationFactor},
		MaxRecordsPerRequest: cfg.MaxRecordsPerRequest,
		Limiter:              e.limiter,
		Logger:               e.set.Logger,
		Observer:             e.observer(),
	}
	if cfg.DryRun {
		w, err := e.openDryRun()
		if err != nil {
			return err
		}
		e.dryRun, dcfg.DryRun = w, w
		e.set.Logger.Warn("dry_run is on: request bodies are written out, nothing is sent to CloudZero")
	} else {
		httpClient, err := e.conns.toClient(ctx, cfg.ClientConfig, host, e.set.TelemetrySettings)
		if err != nil {
			return err
		}
		// A key read from a file often ends with a newline: it is not part of the key.
		dcfg.Client = czexporter.NewClient(httpClient, cfg.ClientConfig.Endpoint, strings.TrimSpace(string(cfg.APIKey)))
		dcfg.Client.SetUserAgent(czexporter.UserAgent(hostProgram(e.set.BuildInfo)))
	}
	if cfg.Storage != nil {
		client, err := storageClient(ctx, host, *cfg.Storage, e.set.ID)
		if err != nil {
			return err
		}
		dcfg.Storage = client
	}
	d, err := czexporter.NewDelivery(dcfg)
	if err == nil {
		err = d.Start(ctx)
	}
	if err != nil {
		if dcfg.Storage != nil {
			_ = dcfg.Storage.Close(ctx)
		}
		return err
	}
	e.statsMu.Lock() // the gauges read it
	e.delivery = d
	e.statsMu.Unlock()
	return nil
}

func storageClient(ctx context.Context, host component.Host, id, exporterID component.ID) (storage.Client, error) {
	ext, ok := host.GetExtensions()[id]
	if !ok {
		return nil, fmt.Errorf("storage: extension %q not found (add it under extensions: and service.extensions)", id)
	}
	se, ok := ext.(storage.Extension)
	if !ok {
		return nil, fmt.Errorf("storage: extension %q is not a storage extension", id)
	}
	client, err := se.GetClient(ctx, component.KindExporter, exporterID, storageName)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return client, nil
}

func (e *cloudzeroExporter) openDryRun() (io.WriteCloser, error) {
	if e.cfg.DryRunFile == "" {
		return &logWriter{logger: e.set.Logger}, nil
	}
	f, err := os.OpenFile(e.cfg.DryRunFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("dry_run_file: %w", err)
	}
	return f, nil
}

func (e *cloudzeroExporter) shutdown(ctx context.Context) error {
	var errs []error
	if e.delivery != nil {
		errs = append(errs, e.delivery.Shutdown(ctx))
	}
	if e.dryRun != nil {
		errs = append(errs, e.dryRun.Close())
	}
	e.conns.closeIdle() // no connection outlives the exporter
	e.drops.flush(e.set.Logger)
	e.telemetry.Shutdown()
	return errors.Join(errs...)
}

// push counts md's usage into the ledger. A nil error means it is
// committed (and, with storage, survives a crash); on an error nothing of
// md was counted, so the sender's retry counts it once.
func (e *cloudzeroExporter) push(ctx context.Context, md pmetric.Metrics) error {
	err := e.consume(ctx, md)
	if err != nil {
		e.countRefused(ctx, md.DataPointCount(), err)
	}
	return err
}

func (e *cloudzeroExporter) countRefused(ctx context.Context, points int, err error) {
	reason := "storage"
	switch {
	case errors.Is(err, czexporter.ErrLedgerFull):
		reason = "max_keys"
	case errors.Is(err, czexporter.ErrStopped):
		reason = "stopped"
	}
	e.telemetry.ExporterCloudzeroDatapointsRefused.Add(ctx, int64(points), metric.WithAttributes(attribute.String("reason", reason)))
}

// consume is push without counting a refusal.
func (e *cloudzeroExporter) consume(ctx context.Context, md pmetric.Metrics) error {
	stats, err := e.delivery.Consume(ctx, md)
	if err != nil {
		return err
	}
	e.drops.add(stats.Dropped, e.set.Logger)
	t := e.telemetry
	t.ExporterCloudzeroDatapointsReceived.Add(ctx, int64(stats.Points))
	t.ExporterCloudzeroDatapointsIgnored.Add(ctx, int64(stats.Ignored))
	for reason, n := range stats.Dropped {
		t.ExporterCloudzeroDatapointsDropped.Add(ctx, int64(n), metric.WithAttributes(attribute.String("reason", string(reason))))
	}
	t.ExporterCloudzeroSeriesTracked.Add(ctx, int64(stats.Series)-e.series.Swap(int64(stats.Series)))
	return nil
}

// observer publishes the delivery core's counts as the exporter's metrics.
func (e *cloudzeroExporter) observer() czexporter.Observer {
	t := e.telemetry
	reason := func(r string) metric.MeasurementOption { return metric.WithAttributes(attribute.String("reason", r)) }
	return czexporter.Observer{
		Sent: func(ctx context.Context, _ string, op czexporter.Op, records int) {
			t.ExporterCloudzeroRecordsSent.Add(ctx, int64(records), metric.WithAttributes(attribute.String("operation", string(op))))
		},
		DryRun: func(ctx context.Context, _ string, _ int) {
			t.ExporterCloudzeroRequests.Add(ctx, 1, metric.WithAttributes(attribute.String("status_class", "dry_run")))
		},
		Dropped: func(ctx context.Context, _ string, r string, records int, units float64) {
			t.ExporterCloudzeroRecordsDropped.Add(ctx, int64(records), reason(r))
			t.ExporterCloudzeroUnitsDropped.Add(ctx, units, reason(r))
		},
		Request: func(ctx context.Context, _ string, class string) {
			t.ExporterCloudzeroRequests.Add(ctx, 1, metric.WithAttributes(attribute.String("status_class", class)))
		},
		Ambiguous: func(ctx context.Context, _ string, records int, units float64) {
			t.ExporterCloudzeroAmbiguousRecords.Add(ctx, int64(records))
			t.ExporterCloudzeroAmbiguousUnits.Add(ctx, units)
		},
		Bisected: func(ctx context.Context, _ string) {
			t.ExporterCloudzeroBisectedRequests.Add(ctx, 1)
		},
	}
}

// ledgerStats returns the ledger's stats, computed at most once a second:
// the gauges below all read them, and computing them walks every key.
func (e *cloudzeroExporter) ledgerStats() czexporter.LedgerStats {
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	if e.delivery != nil && time.Since(e.statsAt) >= time.Second {
		e.stats, e.statsAt = e.delivery.Stats(), time.Now()
	}
	return e.stats
}

func (e *cloudzeroExporter) registerGauges() error {
	t := e.telemetry
	return errors.Join(
		t.RegisterExporterCloudzeroDailyBudgetRemainingCallback(func(_ context.Context, o metric.Int64Observer) error {
			left, limited := e.limiter.BudgetLeft()
			if !limited {
				left = -1
			}
			o.Observe(int64(left))
			return nil
		}),
		t.RegisterExporterCloudzeroLedgerKeysCallback(func(_ context.Context, o metric.Int64Observer) error {
			s := e.ledgerStats()
			o.Observe(int64(s.OpenKeys), metric.WithAttributes(attribute.String("bucket", "open")))
			o.Observe(int64(s.ClosedKeys), metric.WithAttributes(attribute.String("bucket", "closed")))
			return nil
		}),
		t.RegisterExporterCloudzeroLedgerUnsentKeysCallback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(e.ledgerStats().UnsentKeys))
			return nil
		}),
		t.RegisterExporterCloudzeroLedgerUnsentUnitsCallback(func(_ context.Context, o metric.Float64Observer) error {
			o.Observe(e.ledgerStats().UnsentUnits)
			return nil
		}),
		t.RegisterExporterCloudzeroLedgerOldestUnsentAgeCallback(func(_ context.Context, o metric.Float64Observer) error {
			o.Observe(e.ledgerStats().OldestUnsentAge)
			return nil
		}),
	)
}

// logWriter logs each dry-run request (one line) at info level.
type logWriter struct{ logger *zap.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	sc.Buffer(nil, len(p)+1)
	for sc.Scan() {
		stream, rest, _ := strings.Cut(sc.Text(), " ")
		op, body, _ := strings.Cut(rest, " ")
		w.logger.Info("dry_run: request not sent", zap.String("stream", stream), zap.String("operation", op), zap.String("body", body))
	}
	return len(p), nil
}

func (w *logWriter) Close() error { return nil }

// hostProgram names the program the exporter runs in, for the User-Agent
// ("otelcol-cloudzero/0.1.0").
func hostProgram(info component.BuildInfo) string {
	if info.Command == "" {
		return ""
	}
	if info.Version == "" {
		return info.Command
	}
	return info.Command + "/" + info.Version
}
