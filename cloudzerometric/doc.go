// Package cloudzerometric is an OpenTelemetry Go SDK metric exporter
// (sdkmetric.Exporter) that sends usage to CloudZero as allocation
// telemetry, without a collector:
//
//	cfg := cloudzerometric.NewConfig() // or ConfigFromCollectorFile / ConfigFromYAML
//	cfg.APIKey = configopaque.String(os.Getenv("CLOUDZERO_API_KEY"))
//	cfg.Streams = []cloudzerometric.StreamConfig{{Name: "requests", Metrics: []string{"app.requests"}, ElementName: "customer.id"}}
//	exp, err := cloudzerometric.New(ctx, cfg, cloudzerometric.WithStorageDir("/var/lib/myapp/cloudzero"))
//	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
//
// It is the collector's cloudzero exporter run in-process: the same Config
// (Go struct, or the YAML of the collector's `cloudzero:` section), the same
// translator, ledger, journal and sender, so the same records and the same
// guarantees (see the repository's README):
//
//   - Export counts the usage into the ledger and returns once it is there
//     (with WithStorageDir, stored: it survives a crash). It keeps nothing of
//     the ResourceMetrics it is given. Sending happens in the background,
//     every flush_interval (default 5m; a key's closing send a minute after
//     its hour ends), with the rate limit, retries and bisection of the
//     collector exporter. When usage cannot be counted yet (max_keys, a
//     storage error) Export retries until its context ends, then returns
//     the error, which the PeriodicReader passes to otel.Handle.
//   - ForceFlush sends everything the ledger holds, retrying until its
//     context ends. Shutdown does the same for at most shutdown_timeout
//     (default 20s) or its context; with WithStorageDir what is left stays
//     stored for the next start, without it is dropped and counted.
//   - Export, ForceFlush and Shutdown are safe for concurrent use.
//   - Temporality: DeltaTemporality (delta for counters and histograms,
//     cumulative for up-down counters and gauges, whose level value: auto
//     integrates). Cumulative input works too (WithTemporalitySelector).
//     Aggregation: the SDK's default (explicit-bucket histograms; streams
//     use a histogram's count or sum, never its buckets).
//   - Errors: a config error at New names the field, as the collector's
//     validation does. Send failures and dropped points are logged (drops
//     at most once a minute, by reason; by default to otel.Handle, warnings
//     and errors only). The API key appears in neither.
//   - Telemetry: the collector exporter's instruments
//     (otelcol_exporter_cloudzero_records_sent, _datapoints_dropped{reason},
//     _ambiguous_records, the ledger gauges, ...) on the MeterProvider of
//     WithMeterProvider, with the instrumentation scope attribute
//     otelcol.component.id ("cloudzero" or "cloudzero/<WithName>"); never
//     pass the provider being exported.
//
// Use a collector instead when several services share the usage streams,
// when the data is already sent over OTLP, or when the gateway should own
// the CloudZero key and budget; use this package when a Go service owns
// its streams and runs no collector.
package cloudzerometric
