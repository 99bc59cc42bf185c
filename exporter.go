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
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/metadata"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// cloudzeroExporter is the collector component. The data path:
//
//	ConsumeMetrics -> translator (per-series state, under a lock) -> records
//	  -> exporterhelper sending_queue (memory or file_storage) and batcher
//	     (records merge by key while they wait) -> retry_on_failure
//	  -> push -> exporter.Sender (chunks, rate limit, POST to sum, statuses)
//
// Translation happens before the queue because it is stateful; the push is
// stateless and safe to call again with the same request.
type cloudzeroExporter struct {
	cfg       *Config
	logger    *zap.Logger
	telemetry *metadata.TelemetryBuilder
	tr        *translator.Translator
	limiter   *czexporter.Limiter
	state     *stateStore // nil without a storage extension

	settings    exporter.Settings
	sender      *czexporter.Sender // built in start: needs the host's extensions
	dryRun      io.WriteCloser
	stopped     context.Context // done at shutdown: ends long waits on the rate limit
	stop        context.CancelFunc
	seriesCount int // last reported to the series_tracked metric

	consumeMu sync.Mutex // one translation + enqueue at a time, so state advances only with what was queued
}

// metricsExporter wraps exporterhelper's exporter: consume translates before
// handing records to exporterhelper, and shutdown first releases pushes
// waiting long on the rate limit so that the queue can drain.
type metricsExporter struct {
	exporter.Metrics
	e *cloudzeroExporter
}

func (m *metricsExporter) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error {
	return m.e.consume(ctx, md, m.Metrics)
}

func (m *metricsExporter) Shutdown(ctx context.Context) error {
	m.e.stop() // before exporterhelper drains the queue
	return m.Metrics.Shutdown(ctx)
}

func newMetricsExporter(ctx context.Context, set exporter.Settings, cfg *Config) (exporter.Metrics, error) {
	tb, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	tr, err := translator.New(translatorSettings(cfg))
	if err != nil {
		return nil, err
	}
	e := &cloudzeroExporter{
		cfg:       cfg,
		settings:  set,
		logger:    set.Logger,
		telemetry: tb,
		tr:        tr,
	}
	e.stopped, e.stop = context.WithCancel(context.Background())
	e.limiter = czexporter.NewLimiter(czexporter.LimiterConfig{
		RecordsPerSecond: cfg.RateLimit.RecordsPerSecond,
		Burst:            cfg.RateLimit.Burst,
		RecordsPerDay:    int(cfg.RateLimit.RecordsPerDay),
		Clock:            limiterClock{stopped: e.stopped},
		OnWait: func(ctx context.Context, waited time.Duration, reason string) {
			tb.ExporterCloudzeroRateLimitWaitTime.Add(ctx, waited.Seconds(), metric.WithAttributes(attribute.String("reason", reason)))
		},
	})
	if err := tb.RegisterExporterCloudzeroDailyBudgetRemainingCallback(func(_ context.Context, o metric.Int64Observer) error {
		left, limited := e.limiter.BudgetLeft()
		if !limited {
			left = -1
		}
		o.Observe(int64(left))
		return nil
	}); err != nil {
		return nil, err
	}

	inner, err := xexporterhelper.NewMetricsRequest(ctx, set, e.convert, e.push,
		exporterhelper.WithStart(e.start),
		exporterhelper.WithShutdown(e.shutdown),
		exporterhelper.WithCapabilities(consumer.Capabilities{MutatesData: false}),
		// The HTTP client has its own timeout (confighttp `timeout`); a push
		// may also wait on the rate limit, which a helper timeout would cut.
		exporterhelper.WithTimeout(exporterhelper.TimeoutConfig{Timeout: 0}),
		exporterhelper.WithRetry(cfg.BackOffConfig),
		xexporterhelper.WithQueueBatch(cfg.QueueConfig, xexporterhelper.QueueBatchSettings{
			Encoding: requestEncoding{waiting: e.addWaiting},
		}),
	)
	if err != nil {
		return nil, err
	}
	return &metricsExporter{Metrics: inner, e: e}, nil
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
	var client *czexporter.Client
	cfg := czexporter.SenderConfig{
		Chunker: czexporter.Chunker{MaxRecords: e.cfg.MaxRecordsPerRequest},
		Limiter: e.limiter,
		Budget:  czexporter.BudgetWait,
		Logger:  e.logger,
		Observer: czexporter.Observer{
			Sent: func(ctx context.Context, _ string, records, _ int) {
				e.telemetry.ExporterCloudzeroRecordsSent.Add(ctx, int64(records))
			},
			Dropped: func(ctx context.Context, _ string, reason string, records int) {
				e.telemetry.ExporterCloudzeroRecordsDropped.Add(ctx, int64(records), metric.WithAttributes(attribute.String("reason", reason)))
			},
			Request: func(ctx context.Context, _ string, class string) {
				e.telemetry.ExporterCloudzeroRequests.Add(ctx, 1, metric.WithAttributes(attribute.String("status_class", class)))
			},
			DryRun: func(ctx context.Context, _ string, _ int, _ int) {
				e.telemetry.ExporterCloudzeroRequests.Add(ctx, 1, metric.WithAttributes(attribute.String("status_class", "dry_run")))
			},
		},
	}
	if e.cfg.DryRun {
		w, err := e.openDryRun()
		if err != nil {
			return err
		}
		e.dryRun, cfg.DryRun = w, w
		e.logger.Warn("dry_run is on: request bodies are written out, nothing is sent to CloudZero")
	} else {
		httpClient, err := e.cfg.ClientConfig.ToClient(ctx, host.GetExtensions(), e.settings.TelemetrySettings)
		if err != nil {
			return err
		}
		client = czexporter.NewClient(httpClient, e.cfg.ClientConfig.Endpoint, string(e.cfg.APIKey))
	}
	e.sender = czexporter.NewSender(client, cfg)

	if id := e.storageID(); id != nil {
		st, err := openStateStore(ctx, host, *id, e.settings.ID, e.logger)
		if err != nil {
			return err
		}
		e.state = st
		if err := st.restore(ctx, e.tr); err != nil {
			return err
		}
	}
	return nil
}

func (e *cloudzeroExporter) storageID() *component.ID {
	if !e.cfg.QueueConfig.HasValue() {
		return nil
	}
	return e.cfg.QueueConfig.Get().StorageID
}

func (e *cloudzeroExporter) openDryRun() (io.WriteCloser, error) {
	if e.cfg.DryRunFile == "" {
		return &logWriter{logger: e.logger}, nil
	}
	f, err := os.OpenFile(e.cfg.DryRunFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("dry_run_file: %w", err)
	}
	return f, nil
}

func (e *cloudzeroExporter) shutdown(ctx context.Context) error {
	e.stop()
	var errs []error
	if e.state != nil {
		e.consumeMu.Lock()
		errs = append(errs, e.state.close(ctx, e.tr))
		e.consumeMu.Unlock()
	}
	if e.dryRun != nil {
		errs = append(errs, e.dryRun.Close())
	}
	e.telemetry.Shutdown()
	return errors.Join(errs...)
}

// translatedKey carries the records of one consume call to convert.
type translatedKey struct{}

// consume translates md and enqueues the records. When the queue refuses
// them (full), the translator's state changes are rolled back, so nothing is
// lost: the caller's retry, or the next cumulative point, counts the same
// usage again, once. Any other error comes from a push (queue disabled, or
// wait_for_result) that may have sent part of the records: the state is then
// kept, as re-counting could count twice.
func (e *cloudzeroExporter) consume(ctx context.Context, md pmetric.Metrics, next consumer.Metrics) error {
	e.consumeMu.Lock()
	defer e.consumeMu.Unlock()

	tx := e.tr.Begin(md)
	var err error
	if n := tx.Records().Len(); n > 0 {
		err = next.ConsumeMetrics(context.WithValue(ctx, translatedKey{}, tx.Records()), md)
		if errors.Is(err, exporterhelper.ErrQueueIsFull) {
			tx.Rollback()
			if e.storageID() == nil {
				e.addWaiting(-n) // convert counted them
			}
			return err
		}
	}
	if e.state == nil {
		e.recordStats(ctx, tx.Commit())
		return err
	}
	// Journaled after the records were queued: a crash between the two can
	// count this call's cumulative deltas twice after a restart, never lose them.
	stats, changes := tx.CommitChanges()
	e.recordStats(ctx, stats)
	if serr := e.state.save(ctx, e.tr, changes); serr != nil {
		e.logger.Error("Saving the series state failed: after a restart, the usage of this batch may be counted twice", zap.Error(serr))
	}
	return err
}

// convert hands exporterhelper the records consume translated.
func (e *cloudzeroExporter) convert(ctx context.Context, _ pmetric.Metrics) (xexporterhelper.Request, error) {
	set, ok := ctx.Value(translatedKey{}).(*record.Set)
	if !ok {
		return nil, errors.New("cloudzero: records missing from the context")
	}
	if e.storageID() == nil {
		e.addWaiting(set.Len()) // a persistent queue counts it when reading it back
	}
	return newRecordsRequest(set, e.addWaiting), nil
}

// push sends one batch of records. On a retryable failure it reports the
// records CloudZero did not accept, so the retry re-sends only those.
//
// A throttle whose Retry-After is longer than retry_on_failure allows between
// attempts is waited out here (ending early at shutdown), then the rest is
// sent again: handed to the retry sender, such a delay would exceed
// max_elapsed_time and drop the batch.
func (e *cloudzeroExporter) push(ctx context.Context, req xexporterhelper.Request) error {
	r := req.(*recordsRequest)
	set := r.set
	n := set.Len()
	for {
		unsent, err := e.sender.Send(ctx, set)
		switch {
		case err == nil:
			e.addWaiting(-n)
			return nil
		case czexporter.IsPermanent(err):
			e.addWaiting(-n)
			return consumererror.NewPermanent(err)
		}
		e.addWaiting(unsent.Len() - n)
		set, n = unsent, unsent.Len()
		err = &unsentError{err: err, unsent: unsent}
		if !czexporter.IsThrottle(err) {
			return err
		}
		delay := czexporter.RetryAfter(err)
		if delay <= e.cfg.BackOffConfig.MaxInterval || !e.cfg.BackOffConfig.Enabled {
			return exporterhelper.NewThrottleRetry(err, delay)
		}
		e.logger.Info("CloudZero asked to wait before sending again", zap.Duration("retry_after", delay), zap.Int("records", n))
		if werr := (limiterClock{stopped: e.stopped}).Sleep(ctx, delay); werr != nil {
			return exporterhelper.NewThrottleRetry(err, 0)
		}
	}
}

// maxWaitAtShutdown: at shutdown, a push that must wait longer than this on
// the rate limit (typically for the next UTC day's budget) gives up, so the
// collector can stop; its records stay in the persistent queue if there is
// one. Shorter waits proceed, so that the queue drains.
const maxWaitAtShutdown = 10 * time.Second

// limiterClock is the rate limiter's clock: real time, but long sleeps end
// at shutdown.
type limiterClock struct {
	czexporter.RealClock
	stopped context.Context
}

func (c limiterClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= maxWaitAtShutdown {
		return c.RealClock.Sleep(ctx, d)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(c.stopped, func() { cancel(errShuttingDown) })()
	if err := c.RealClock.Sleep(ctx, d); err != nil {
		return context.Cause(ctx)
	}
	return nil
}

var errShuttingDown = errors.New("cloudzero exporter is shutting down")

func (e *cloudzeroExporter) addWaiting(delta int) {
	if delta != 0 {
		e.telemetry.ExporterCloudzeroAggregationKeys.Add(context.Background(), int64(delta))
	}
}

func (e *cloudzeroExporter) recordStats(ctx context.Context, s translator.Stats) {
	t := e.telemetry
	t.ExporterCloudzeroDatapointsReceived.Add(ctx, int64(s.Points))
	t.ExporterCloudzeroDatapointsIgnored.Add(ctx, int64(s.Ignored))
	for reason, n := range s.Dropped {
		t.ExporterCloudzeroDatapointsDropped.Add(ctx, int64(n), metric.WithAttributes(attribute.String("reason", string(reason))))
	}
	t.ExporterCloudzeroSeriesTracked.Add(ctx, int64(s.Series-e.seriesCount))
	e.seriesCount = s.Series
}

// logWriter logs each dry-run request (one line) at info level.
type logWriter struct{ logger *zap.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	sc.Buffer(nil, len(p)+1)
	for sc.Scan() {
		stream, body, _ := strings.Cut(sc.Text(), " ")
		w.logger.Info("dry_run: request not sent", zap.String("stream", stream), zap.String("body", body))
	}
	return len(p), nil
}

func (w *logWriter) Close() error { return nil }
